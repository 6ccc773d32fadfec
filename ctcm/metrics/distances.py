"""Distances between feature distributions: Frechet (FID) and kernel (KID)."""

from __future__ import annotations

import numpy as np
from ..errors import UserValueError


def _sqrt_psd(matrix: np.ndarray) -> np.ndarray:
    """The symmetric square root of a symmetric PSD matrix (eigen-decomposition, tiny negatives clipped)."""
    w, v = np.linalg.eigh((matrix + matrix.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """d^2 = |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1^{1/2} S2 S1^{1/2})^{1/2}), in float64.

    tr((S1 S2)^{1/2}) is computed as the trace of the square root of the symmetric PSD matrix
    S1^{1/2} S2 S1^{1/2} (same eigenvalues as S1 S2), by ``eigh`` with tiny negative eigenvalues clipped to 0,
    so no complex square roots and no ``sqrtm`` instability for singular covariances (N < D).
    mu (D,), sigma (D, D).
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    if mu1.shape != mu2.shape or mu1.ndim != 1:
        raise UserValueError(f"means must be 1-d of one shape, got {mu1.shape} and {mu2.shape}")
    d = mu1.shape[0]
    if sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise UserValueError(f"covariances must be ({d}, {d}), got {sigma1.shape} and {sigma2.shape}")
    root1 = _sqrt_psd(sigma1)
    middle = root1 @ sigma2 @ root1
    eig = np.linalg.eigvalsh((middle + middle.T) / 2)
    tr_covmean = np.sqrt(np.clip(eig, 0, None)).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * tr_covmean)


def kid_from_features(features1: np.ndarray, features2: np.ndarray, *, subsets: int = 100,
                      subset_size: int = 1000, seed: int = 0) -> tuple[float, float]:
    """Kernel Inception Distance (mean, std over ``subsets`` random subsets): the unbiased MMD^2 estimate with
    the cubic polynomial kernel k(x, y) = (x.y / D + 1)^3 (Binkowski et al. 2018), via torch-fidelity.

    ``subset_size`` is capped at the smaller set's size. features (N, D).
    """
    import torch
    from torch_fidelity.metric_kid import kid_features_to_metric

    n = min(len(features1), len(features2))
    if n < 2:
        raise UserValueError(f"KID needs at least 2 samples per set, got {len(features1)} and {len(features2)}")
    out = kid_features_to_metric(
        torch.as_tensor(np.asarray(features1, np.float64)), torch.as_tensor(np.asarray(features2, np.float64)),
        kid_subsets=subsets, kid_subset_size=min(subset_size, n), rng_seed=seed, verbose=False,
        kid_kernel="poly", kid_kernel_poly_degree=3, kid_kernel_poly_gamma=None, kid_kernel_poly_coef0=1)
    return out["kernel_inception_distance_mean"], out["kernel_inception_distance_std"]
