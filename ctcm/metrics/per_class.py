"""Per-class FID: the FID of each class's generated images against that class's reference images."""

from __future__ import annotations

import os

import numpy as np

from ..data.sources import DataError, open_source
from .distances import frechet_distance
from .stats import statistics_from_features


def source_labels(source: str | os.PathLike, split: str, count: int) -> tuple[np.ndarray, list[str]]:
    """The labels (count,) of the first ``count`` images of a source, and the class names; a
    :class:`DataError` for a source without labels."""
    src = open_source(source, split)
    if src.labels is None or src.class_names is None:
        raise DataError(f"{src.description} has no class labels, which per-class FID needs (a .npz from "
                        f"`ctcm sample --classes all` stores them under 'y'; class subfolders label a folder or zip)")
    return src.labels[:count], list(src.class_names)


def per_class_fid(gen: np.ndarray, gen_labels: np.ndarray, ref: np.ndarray, ref_labels: np.ndarray,
                  class_names: list[str]) -> dict[str, float]:
    """``{class name: FID}`` of features gen (N, D) and ref (M, D) split by their labels (N,), (M,);
    a class with fewer than 2 images in either set is left out (no covariance)."""
    out: dict[str, float] = {}
    for k, name in enumerate(class_names):
        a, b = gen[gen_labels == k], ref[ref_labels == k]
        if len(a) >= 2 and len(b) >= 2:
            sa, sb = statistics_from_features(a), statistics_from_features(b)
            out[name] = frechet_distance(sa.mu, sa.sigma, sb.mu, sb.sigma)
    return out
