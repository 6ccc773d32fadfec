"""Feature extraction and Inception statistics (mean, covariance in float64), cached as ``.npz``.

A statistics file holds ``mu`` (D,) and ``sigma`` (D, D) float64, ``count``, a JSON ``meta`` record (what
produced it: source, split, count, source fingerprint, network sha1, protocol) and optionally ``features``
(N, D) float32 for KID. Statistics computed from a data source are cached under ``cache_dir`` and recomputed
when the source's fingerprint (file sizes and mtimes) or the network changes.

Under ``torchrun`` (torch.distributed initialised) each rank extracts batches rank, rank + world, ... and the
features are all-gathered in the original order, so every rank returns the same statistics.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..atomic import atomic_write
from ..data.dataset import iter_uint8_batches
from ..data.sources import EMBEDDED, DataError, open_source
from ..runtime import rank_world
from .network import WEIGHTS_SHA1, InceptionFeatures

PROTOCOL = "tf-inception-2015-12-05 pool3; uint8; tf1 bilinear 299; (x-128)/128"
FeatureNet = Callable[[np.ndarray], Tensor]  # uint8 (B, H, W, 3) -> (B, D); InceptionFeatures or a stand-in


@dataclass
class Statistics:
    """Inception statistics of an image set: mu (D,), sigma (D, D) float64, the image count, a record of
    what produced them, and optionally the features (N, D) float32 (needed for KID)."""

    mu: np.ndarray
    sigma: np.ndarray
    count: int
    meta: dict[str, Any] = field(default_factory=dict)
    features: np.ndarray | None = None

    def save(self, path: str | os.PathLike) -> Path:
        """Write the statistics atomically (:func:`ctcm.atomic.atomic_write`)."""
        arrays: dict[str, Any] = dict(mu=self.mu, sigma=self.sigma, count=np.int64(self.count),
                                      meta=np.array(json.dumps(self.meta, sort_keys=True)))
        if self.features is not None:
            arrays["features"] = self.features.astype(np.float32)
        return atomic_write(path, lambda fh: np.savez(fh, **arrays))

    def require_features(self) -> np.ndarray:
        """The features (N, D), or a clear error when these statistics were saved without them."""
        if self.features is None:
            raise DataError(f"statistics of {self.meta.get('source', 'this set')} hold no features (KID needs them); "
                            f"rebuild them with `ctcm fid-stats SOURCE --features`")
        return self.features

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Statistics":
        try:
            with np.load(path, allow_pickle=False) as data:
                if "mu" not in data.files or "sigma" not in data.files:
                    raise DataError(f"{path}: not an Inception statistics file (keys {data.files}; expected mu, "
                                    f"sigma); build one with `ctcm fid-stats SOURCE --out {path}`")
                return cls(mu=data["mu"].astype(np.float64), sigma=data["sigma"].astype(np.float64),
                           count=int(data["count"]) if "count" in data.files else -1,
                           meta=json.loads(str(data["meta"])) if "meta" in data.files else {},
                           features=data["features"] if "features" in data.files else None)
        except DataError:
            raise
        except Exception as exc:
            raise DataError(f"{path}: cannot read statistics ({exc})") from exc


def is_statistics_file(path: str | os.PathLike) -> bool:
    """True for a ``.npz`` holding ``mu`` and ``sigma`` (rather than images)."""
    p = Path(path)
    if p.suffix.lower() != ".npz" or not p.is_file():
        return False
    try:
        with np.load(p, allow_pickle=False) as data:
            return "mu" in data.files and "sigma" in data.files
    except Exception:
        return False


def statistics_from_features(features: np.ndarray, meta: dict[str, Any] | None = None,
                             keep_features: bool = False) -> Statistics:
    """Mean and unbiased covariance (float64, accumulated in chunks) of features (N, D)."""
    n = len(features)
    if n < 2:
        raise DataError(f"statistics need at least 2 images, got {n} (thousands for a usable FID)")
    mu = features.mean(axis=0, dtype=np.float64)
    sigma = np.zeros((features.shape[1],) * 2)
    for start in range(0, n, 4096):
        c = features[start:start + 4096].astype(np.float64) - mu
        sigma += c.T @ c
    sigma /= n - 1
    return Statistics(mu, sigma, n, dict(meta or {}), features.astype(np.float32) if keep_features else None)


# -- distributed helpers -----------------------------------------------------------------------------------------
def _gather_batches(local: list[np.ndarray], num_batches: int, distributed: bool = True) -> list[np.ndarray]:
    """Rank r holds batches r, r + W, ...: all-gather them and restore the batch order (identity at W=1)."""
    rank, world = rank_world(distributed)
    if world == 1:
        return local
    gathered: list[Any] = [None] * world
    torch.distributed.all_gather_object(gathered, local)
    return [gathered[b % world][b // world] for b in range(num_batches)]


def extract_features(batches: Iterable[np.ndarray], network: FeatureNet, *, num_batches: int,
                     progress: bool = True, desc: str = "features", distributed: bool = True) -> np.ndarray:
    """Features (N, D) float32 of this rank's uint8 batches (B, H, W, 3), all-gathered across ranks
    (``distributed=False``: this process's batches are all the batches; no collective call)."""
    from tqdm.auto import tqdm

    rank, world = rank_world(distributed)
    total = len(range(rank, num_batches, world))
    local = [network(b).detach().cpu().numpy().astype(np.float32)
             for b in tqdm(batches, total=total, desc=desc, unit="batch", disable=not progress or rank != 0)]
    gathered = _gather_batches(local, num_batches, distributed)
    if not gathered:
        raise DataError(f"{desc}: no images")
    return np.concatenate(gathered)


# -- statistics of a data source ---------------------------------------------------------------------------------
def _source_name(source: str | os.PathLike) -> str:
    """A stable name: the absolute path for files and folders, the string itself for embedded / cifar10."""
    text = os.fspath(source)
    if text == EMBEDDED or text == "cifar10" or text.startswith("cifar10:") or not Path(text).exists():
        return text
    return str(Path(text).resolve())


def _source_record(source: str | os.PathLike, split: str, num: int | None) -> tuple[Any, dict[str, Any]]:
    src = open_source(source, split)
    count = len(src) if num is None else min(int(num), len(src))
    if num is not None and num > len(src):
        warnings.warn(f"{src.description} holds {len(src)} images, fewer than the {num} asked for; using all",
                      stacklevel=3)
    size = list(src.load(0).shape[:2]) if len(src) else None
    return src, {"source": _source_name(source), "description": src.description, "split": split, "count": count,
                 "size": size, "fingerprint": src.fingerprint(), "protocol": PROTOCOL}


def compute_statistics(source: str | os.PathLike, *, num: int | None = None, batch_size: int = 250,
                       split: str = "train", network: FeatureNet | None = None, device: Any = None,
                       weights: str | os.PathLike | None = None, keep_features: bool = False,
                       progress: bool = True, distributed: bool = True) -> Statistics:
    """Statistics of the first ``num`` images (all when None) of a data source (see :mod:`ctcm.data`).

    ``network`` defaults to :class:`InceptionFeatures` (``weights``, ``device``). Images are fed at their
    stored size (the network resizes to 299). With torch.distributed initialised and ``distributed=True``
    this is a collective call (every rank must make it; each embeds a strided shard); ``distributed=False``
    embeds everything in this process.
    """
    src, meta = _source_record(source, split, num)
    network = network if network is not None else InceptionFeatures(weights, device)
    meta["network_sha1"] = getattr(network, "sha1", "unknown")
    n_batches = -(-meta["count"] // batch_size)
    batches = iter_uint8_batches(src, batch_size, meta["count"], shard=rank_world(distributed))
    feats = extract_features(batches, network, num_batches=n_batches, progress=progress,
                             desc=f"Inception features of {src.description}", distributed=distributed)
    return statistics_from_features(feats, meta, keep_features)


def default_cache_dir() -> Path:
    return Path(os.environ.get("CTCM_CACHE_DIR", Path.home() / ".cache" / "ctcm")) / "fid-stats"


def cache_path(source: str | os.PathLike, *, num: int | None, split: str, network_sha1: str,
               cache_dir: str | os.PathLike | None = None) -> Path:
    """Where the statistics of (source, split, num, network) are cached."""
    name = _source_name(source)
    key = hashlib.sha1(json.dumps([name, split, num, network_sha1, PROTOCOL]).encode()).hexdigest()[:16]
    slug = "".join(c if c.isalnum() else "-" for c in Path(name).name)[:40] or "source"
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return folder / f"{slug}-{split}-{num or 'all'}-{key}.npz"


def load_or_compute_statistics(ref: str | os.PathLike, *, num: int | None = None, batch_size: int = 250,
                               split: str = "train", network: FeatureNet | None = None, device: Any = None,
                               weights: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None,
                               keep_features: bool = False, progress: bool = True,
                               distributed: bool = True) -> Statistics:
    """Statistics of ``ref``: a statistics ``.npz`` is loaded as is; a data source is computed once and
    cached under ``cache_dir`` (default ``~/.cache/ctcm/fid-stats``, or ``$CTCM_CACHE_DIR/fid-stats``). A cached
    file is used only while the source's fingerprint and the network hash still match its record.
    ``distributed`` as in :func:`compute_statistics` (a cache miss is then a collective call)."""
    if is_statistics_file(ref):
        stats = Statistics.load(ref)
        if keep_features and stats.features is None:
            raise DataError(f"{ref}: this statistics file has no features, which KID needs; rebuild it with "
                            f"`ctcm fid-stats SOURCE --features --out {ref}` or pass the data source instead")
        return stats
    sha1 = getattr(network, "sha1", "unknown") if network is not None else WEIGHTS_SHA1  # loaded only on a miss
    path = cache_path(ref, num=num, split=split, network_sha1=sha1, cache_dir=cache_dir)
    _, expected = _source_record(ref, split, num)
    if path.is_file():
        try:
            cached = Statistics.load(path)
            same = all(cached.meta.get(k) == expected[k] for k in ("fingerprint", "count", "split", "protocol"))
            same = same and cached.meta.get("network_sha1") == sha1
            if same and (cached.features is not None or not keep_features):
                return cached
        except DataError:
            pass  # unreadable cache: recompute
    stats = compute_statistics(ref, num=num, batch_size=batch_size, split=split, network=network, device=device,
                               weights=weights, keep_features=keep_features, progress=progress,
                               distributed=distributed)
    if rank_world(distributed)[0] == 0:
        stats.save(path)
    return stats

