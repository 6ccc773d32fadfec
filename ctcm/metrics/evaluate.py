"""FID / KID between image sets, and :class:`FIDEvaluator` for a model during training."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import numpy as np
from torch import Tensor

from ..runtime import rank_world
from ..sampling import class_cond, to_uint8
from .distances import frechet_distance, kid_from_features
from .inception_score import InceptionLogits, inception_score
from .network import InceptionFeatures
from .stats import (FeatureNet, Statistics, compute_statistics, extract_features, is_statistics_file,
                    load_or_compute_statistics, statistics_from_features)
from ..errors import UserValueError

SetLike = str | os.PathLike | Statistics


def _statistics(images: SetLike, *, num: int | None, split: str, network: FeatureNet, cache_dir: Any,
                batch_size: int, keep_features: bool, progress: bool, cache: bool) -> Statistics:
    if isinstance(images, Statistics):
        return images
    if cache or is_statistics_file(images):
        return load_or_compute_statistics(images, num=num, split=split, network=network, cache_dir=cache_dir,
                                          batch_size=batch_size, keep_features=keep_features, progress=progress)
    return compute_statistics(images, num=num, split=split, network=network, batch_size=batch_size,
                              keep_features=keep_features, progress=progress)


def fid(gen: SetLike, ref: SetLike, *, num: int | None = None, batch_size: int = 250, device: Any = None,
        weights: str | os.PathLike | None = None, network: FeatureNet | None = None,
        cache_dir: str | os.PathLike | None = None, gen_split: str = "train", ref_split: str = "train",
        progress: bool = True) -> float:
    """FID between two image sets, each a data source, a statistics ``.npz`` or :class:`Statistics`.

    ``num`` limits both sets to their first ``num`` images. The reference's statistics are cached
    (see :func:`load_or_compute_statistics`); the generated set's are computed afresh.
    """
    network = network if network is not None else _LazyNetwork(weights, device)
    kw: dict[str, Any] = dict(num=num, network=network, cache_dir=cache_dir, batch_size=batch_size,
                              keep_features=False, progress=progress)
    s_gen = _statistics(gen, split=gen_split, cache=False, **kw)
    s_ref = _statistics(ref, split=ref_split, cache=True, **kw)
    return frechet_distance(s_gen.mu, s_gen.sigma, s_ref.mu, s_ref.sigma)


def kid(gen: SetLike, ref: SetLike, *, num: int | None = None, subsets: int = 100, subset_size: int = 1000,
        batch_size: int = 250, device: Any = None, weights: str | os.PathLike | None = None,
        network: FeatureNet | None = None, cache_dir: str | os.PathLike | None = None, gen_split: str = "train",
        ref_split: str = "train", seed: int = 0, progress: bool = True) -> tuple[float, float]:
    """KID (mean, std over subsets) between two image sets; a statistics file must hold ``features``."""
    network = network if network is not None else _LazyNetwork(weights, device)
    kw: dict[str, Any] = dict(num=num, network=network, cache_dir=cache_dir, batch_size=batch_size,
                              keep_features=True, progress=progress)
    s_gen = _statistics(gen, split=gen_split, cache=False, **kw)
    s_ref = _statistics(ref, split=ref_split, cache=True, **kw)
    return kid_from_features(s_gen.require_features(), s_ref.require_features(), subsets=subsets,
                             subset_size=subset_size, seed=seed)


class _LazyNetwork:
    """Loads :class:`InceptionFeatures` on first call, so that two statistics files need no weights."""

    def __init__(self, weights: Any, device: Any) -> None:
        self.weights, self.device = weights, device
        self.net: InceptionFeatures | None = None
        from .network import WEIGHTS_SHA1
        self.sha1 = WEIGHTS_SHA1

    def __call__(self, images: np.ndarray) -> Tensor:
        if self.net is None:
            self.net = InceptionFeatures(self.weights, self.device)
        return self.net(images)


class FIDEvaluator:
    """FID of a :class:`ctcm.ConsistencyModel`'s samples against fixed reference statistics.

        ev = FIDEvaluator("embedded", num_samples=2000)   # or a stats .npz from `ctcm fid-stats`
        score = ev.evaluate(model, steps=1, seed=0)

    A class-conditional model (``model.num_classes`` > 0) is evaluated by the conditional protocol: the
    samples are class-balanced (:func:`ctcm.sampling.class_cond`, the labels ``ctcm sample --classes all
    --seed SEED`` uses), against the same unconditional reference (the training set), optionally guided
    (``guidance``). :meth:`scores` adds the Inception Score of the same features (``inception_score=True``).

    The reference statistics are loaded (or computed once and cached) at construction, by the constructing
    process alone (not a collective call: under torchrun let rank 0 construct first, barrier, then the
    others, which then read the cache). ``evaluate`` is a collective call under torchrun; it draws images
    0..num_samples-1 of run ``seed`` by :meth:`ctcm.ConsistencyModel.sample_batches` (the images ``ctcm sample
    --seed SEED`` writes, image for image), in batches of ``batch_size``. Under ``torchrun`` each rank samples
    and embeds batches rank, rank + world, ...; every rank returns the same score.

    Args:
        ref: a statistics ``.npz`` or any data source of :mod:`ctcm.data` (statistics cached).
        num_samples: generated images per evaluation.
        batch_size: sampling and feature batch size.
        device: where Inception runs (default: CUDA when available).
        cache_dir: where reference statistics are cached (default ``~/.cache/ctcm/fid-stats``).
        ref_num: use the first ``ref_num`` reference images (default: all).
        weights: the Inception weights file (default: found automatically).
        network: a feature network to use instead of Inception (tests; anything uint8 (B,H,W,3) -> (B, D)).
        inception_score: also the Inception Score in :meth:`scores` (needs ``is_weights``, see
            :class:`ctcm.metrics.InceptionLogits`, or ``logits``).
        is_weights: torch-fidelity's weights file for the score's softmax layer (default: found automatically).
        logits: a features -> logits map to use instead (tests).
        guidance: classifier-free guidance scale of the samples (conditional models; None: none).
    """

    def __init__(self, ref: str | os.PathLike, num_samples: int, batch_size: int = 250, device: Any = None,
                 cache_dir: str | os.PathLike | None = None, *, ref_num: int | None = None,
                 weights: str | os.PathLike | None = None, ref_split: str = "train", progress: bool = True,
                 network: FeatureNet | None = None, inception_score: bool = False,
                 is_weights: str | os.PathLike | None = None, logits: Any = None,
                 guidance: float | None = None) -> None:
        if num_samples < 2 or batch_size < 1:
            raise UserValueError(f"num_samples must be >= 2 and batch_size >= 1, got {num_samples}, {batch_size}")
        self.num_samples, self.batch_size, self.progress = int(num_samples), int(batch_size), progress
        self.guidance = guidance
        self.logits = (logits if logits is not None else InceptionLogits(is_weights)) if inception_score else None
        self.network = network if network is not None else InceptionFeatures(weights, device)
        # computed by this process alone (no collective): rank 0 may build and cache it while the other ranks
        # wait at a barrier, then read the cache
        self.ref = load_or_compute_statistics(ref, num=ref_num, split=ref_split, network=self.network,
                                              cache_dir=cache_dir, batch_size=batch_size, progress=progress,
                                              distributed=False)

    def images(self, model: Any, steps: int = 1, seed: int = 0) -> Iterator[np.ndarray]:
        """This rank's batches of the evaluated samples, uint8 (b, H, W, C) (see :func:`ctcm.sampling.to_uint8`)."""
        rank, world = rank_world()
        for _, x in model.sample_batches(self.num_samples, seed=seed, steps=steps, batch_size=self.batch_size,
                                         rank=rank, world_size=world, guidance=self.guidance,
                                         cond=class_cond(model.num_classes, seed, self.num_samples)):
            yield to_uint8(x)

    def statistics(self, model: Any, steps: int = 1, seed: int = 0) -> Statistics:
        """Inception statistics of ``num_samples`` samples of ``model``, with their features."""
        was_training = model.training
        model.eval()
        try:
            n_batches = -(-self.num_samples // self.batch_size)
            feats = extract_features(self.images(model, steps, seed), self.network, num_batches=n_batches,
                                     progress=self.progress, desc=f"FID samples ({steps} step)")
        finally:
            model.train(was_training)
        return statistics_from_features(feats, {"source": "model samples", "steps": steps, "seed": seed,
                                                "count": len(feats),
                                                "network_sha1": getattr(self.network, "sha1", "unknown")},
                                        keep_features=self.logits is not None)

    def evaluate(self, model: Any, steps: int = 1, seed: int = 0) -> float:
        """FID of ``num_samples`` samples (``steps`` network evaluations each) against the reference."""
        return self.scores(model, steps, seed)["fid"]

    def scores(self, model: Any, steps: int = 1, seed: int = 0) -> dict[str, float]:
        """``{"fid": ...}`` plus, with ``inception_score``, ``is_mean`` and ``is_std`` of the same samples'
        features (Eq. 33)."""
        s = self.statistics(model, steps, seed)
        out = {"fid": frechet_distance(s.mu, s.sigma, self.ref.mu, self.ref.sigma)}
        if self.logits is not None:
            out["is_mean"], out["is_std"] = inception_score(self.logits(s.require_features()))
        return out
