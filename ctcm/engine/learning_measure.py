"""A cheap, CPU-friendly measure of how close samples are to the data (the demo's learning evidence).

``fd8``: the Frechet distance (the FID formula) between Gaussian fits of 8x8 average-pooled images,
i.e. of 192 pixel features: ||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a^1/2 S_b S_a^1/2)^1/2). Pooling to
8x8 keeps the colour and layout statistics that a small model learns in minutes and leaves out texture
(which needs the Inception features of real FID); with a few hundred to a few thousand images the
192x192 covariances are well estimated. ``channel``: the mean absolute difference of per-channel pixel
means and standard deviations, the crudest check that the colour distribution is right. Both are 0 for
identical distributions; ``fd8_floor`` (training images against held-out images) shows the value that
sampling noise alone gives.
"""

from __future__ import annotations

import numpy as np
import torch.nn.functional as F
from torch import Tensor

from ..metrics.distances import frechet_distance

POOL = 8


def pooled_features(x: Tensor, size: int = POOL) -> np.ndarray:
    """(B, C, H, W) in [-1, 1] -> (B, C size^2) float64 features of the ``size`` x ``size`` average-pooled image."""
    return F.adaptive_avg_pool2d(x.float(), size).flatten(1).double().cpu().numpy()


def frechet_distance_of_features(a: np.ndarray, b: np.ndarray) -> float:
    """Frechet distance (clipped at 0) between Gaussian fits (mean, covariance) of feature sets a (N, D), b (M, D)."""
    fit = [(f.mean(0), np.cov(f, rowvar=False)) for f in (a, b)]
    return max(frechet_distance(*fit[0], *fit[1]), 0.0)


def channel_distance(x: Tensor, y: Tensor) -> float:
    """mean_c (|mean_c(x) - mean_c(y)| + |std_c(x) - std_c(y)|) / 2 over pixel values per channel c."""
    def stats(z: Tensor) -> tuple[Tensor, Tensor]:
        flat = z.float().transpose(0, 1).flatten(1)
        return flat.mean(1), flat.std(1)
    (mx, sx), (my, sy) = stats(x), stats(y)
    return float(((mx - my).abs() + (sx - sy).abs()).mean() / 2)


def data_distance(samples: Tensor, reference: Tensor) -> dict[str, float]:
    """``{fd8, channel}`` of ``samples`` (B, C, H, W) against ``reference`` (M, C, H, W), both in [-1, 1]."""
    return {"fd8": frechet_distance_of_features(pooled_features(samples), pooled_features(reference)),
            "channel": channel_distance(samples, reference)}
