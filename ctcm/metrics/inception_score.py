"""The Inception Score on the FID network's own pool3 features (Salimans et al. 2016; docs/fid.md, Eq. 33).

IS = exp( E_x KL( p(c|x) || p(c) ) ), p(c|x) = softmax(logits(x)), p(c) the mean of p(c|x) over the split,
averaged over 10 splits (mean and standard deviation over them), the protocol of the original TF code and
of torch-fidelity. The logits are torch-fidelity's ``logits_unbiased`` of the same TF-Inception 2015-12-05
network: pool3 (2048) times the transposed weight of its 1008-way softmax layer, without the bias. ctcm's
FID network (``default_1.pt``) ends at pool3, so the score reuses the features FID already extracted and
needs only that layer's weight, read from torch-fidelity's converted weights file
(``weights-inception-2015-12-05-6726825d.pth``, which torch-fidelity downloads on first use; here found
as below, never downloaded). The split arithmetic is torch-fidelity's ``isc_features_to_metric``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ..errors import UserValueError
from .network import FeatureNetworkError

LOGIT_WEIGHTS_FILE = "weights-inception-2015-12-05-6726825d.pth"
LOGIT_WEIGHTS_ENV = "CTCM_IS_WEIGHTS"
NUM_LOGITS = 1008
SPLITS = 10
_HOW_TO_GET = (f"the Inception Score needs the 1008-way softmax layer of TF-Inception, which the FID network file "
               f"lacks: put torch-fidelity's {LOGIT_WEIGHTS_FILE} (torch-fidelity downloads it into torch's hub "
               f"cache, checkpoints/, the first time it computes a metric on a networked machine) there, or pass "
               f"--is-weights PATH / ${LOGIT_WEIGHTS_ENV}")


def find_logit_weights(path: str | os.PathLike | None = None) -> Path:
    """``path``, else ``$CTCM_IS_WEIGHTS``, else torch's hub cache ``checkpoints/`` (where torch-fidelity puts
    the file); a :class:`FeatureNetworkError` saying how to get it when none exists."""
    path = path or os.environ.get(LOGIT_WEIGHTS_ENV)
    if path is None:
        path = Path(torch.hub.get_dir()) / "checkpoints" / LOGIT_WEIGHTS_FILE
    path = Path(path).expanduser()
    if not path.is_file():
        raise FeatureNetworkError(f"Inception Score weights {path}: no such file; {_HOW_TO_GET}")
    return path


class InceptionLogits:
    """pool3 features (N, 2048) -> torch-fidelity's ``logits_unbiased`` (N, 1008): features @ W^T, float64.

    Args:
        weights: torch-fidelity's weights file (a state dict with ``fc.weight`` (1008, 2048)); default:
            :func:`find_logit_weights`.
        weight: the (1008, 2048) matrix itself (tests; ``weights`` is then not read).
    """

    def __init__(self, weights: str | os.PathLike | None = None, *, weight: torch.Tensor | None = None) -> None:
        if weight is None:
            path = find_logit_weights(weights)
            try:
                weight = torch.load(path, map_location="cpu", weights_only=True)["fc.weight"]
            except Exception as exc:
                raise FeatureNetworkError(f"Inception Score weights {path}: cannot read fc.weight ({exc}); "
                                          f"{_HOW_TO_GET}") from exc
        if weight.ndim != 2 or weight.shape[0] != NUM_LOGITS:
            raise FeatureNetworkError(f"Inception Score weights: fc.weight is {tuple(weight.shape)}, expected "
                                      f"({NUM_LOGITS}, 2048); {_HOW_TO_GET}")
        self.weight = weight.to(torch.float64)

    def __call__(self, features: np.ndarray) -> torch.Tensor:
        feats = torch.from_numpy(np.asarray(features, dtype=np.float64))
        if feats.ndim != 2 or feats.shape[1] != self.weight.shape[1]:
            raise UserValueError(f"expected pool3 features (N, {self.weight.shape[1]}), got {tuple(feats.shape)}")
        return feats @ self.weight.T


def inception_score(logits: torch.Tensor, splits: int = SPLITS, seed: int = 2020) -> tuple[float, float]:
    """(mean, std) over ``splits`` of exp(E KL(p(c|x) || p(c))) (Eq. 33) for logits (N, classes); the images
    are shuffled first with ``RandomState(seed)``, as torch-fidelity does."""
    from torch_fidelity.metric_isc import KEY_METRIC_ISC_MEAN, KEY_METRIC_ISC_STD, isc_features_to_metric

    if logits.ndim != 2 or len(logits) < splits:
        raise UserValueError(f"the Inception Score needs logits (N, classes) with N >= {splits} splits, got "
                         f"{tuple(logits.shape)}")
    out = isc_features_to_metric(logits, splits=splits, shuffle=True, rng_seed=seed)
    return float(out[KEY_METRIC_ISC_MEAN]), float(out[KEY_METRIC_ISC_STD])
