"""The training dataset and the uint8 image iterator built on :mod:`ctcm.data.sources`."""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from .sources import DataError, ImageSource, open_source


def resize_center_crop(image: np.ndarray, resolution: int) -> np.ndarray:
    """uint8 (H, W, 3) -> uint8 (resolution, resolution, 3): the shorter side resized to ``resolution``
    (PIL bicubic, antialiased when shrinking), then the centre square cropped. A no-op at the right size."""
    h, w = image.shape[:2]
    if (h, w) == (resolution, resolution):
        return image
    scale = resolution / min(h, w)
    new_w, new_h = max(resolution, round(w * scale)), max(resolution, round(h * scale))
    im = Image.fromarray(image)
    if (new_w, new_h) != (w, h):
        im = im.resize((new_w, new_h), resample=Image.Resampling.BICUBIC)
    left, top = (new_w - resolution) // 2, (new_h - resolution) // 2
    return np.asarray(im.crop((left, top, left + resolution, top + resolution)), dtype=np.uint8)


def unlabelled_error(src: ImageSource) -> DataError:
    """The one error for labels asked of a source that has none."""
    return DataError(f"{src.description} has no class labels, which a class-conditional run (model.num_classes > 0) "
                     f"needs: put the images in class subfolders (<class>/<file>), add integer labels 'y' to the "
                     f".npz, or train unconditionally (model.num_classes=0)")


class ImageDataset(Dataset):
    """Images as float32 tensors (3, resolution, resolution) in [-1, 1]: x = uint8 / 127.5 - 1.

    Item i is a pure function of i: no random flips here. Flips have one owner, the training engine's data
    order (:mod:`ctcm.engine.data_order`, ``data.flip``), seeded by (seed, step). Safe with worker processes.
    With ``labels=True`` an item is ``(x, y)``, y the image's class label as an int64 scalar tensor (the
    source must have labels: :class:`DataError` otherwise); ``class_names`` names them.
    """

    def __init__(self, source: ImageSource, resolution: int = 32, *, labels: bool = False) -> None:
        if resolution < 1:
            raise DataError(f"resolution must be a positive int, got {resolution}")
        if labels and source.labels is None:
            raise unlabelled_error(source)
        self.source = source
        self.resolution = resolution
        self.labels = labels

    @property
    def class_names(self) -> list[str] | None:
        return self.source.class_names

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> Tensor | tuple[Tensor, Tensor]:
        image = resize_center_crop(self.source.load(index), self.resolution)
        x = torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1).to(torch.float32) / 127.5 - 1.0
        if self.labels:
            assert self.source.labels is not None
            return x, torch.tensor(int(self.source.labels[index]), dtype=torch.int64)
        return x

    def __repr__(self) -> str:
        return (f"ImageDataset({self.source.description}, n={len(self)}, resolution={self.resolution}, "
                f"labels={self.labels})")


def build_dataset(source: str | os.PathLike, resolution: int = 32, *, split: str = "train",
                  labels: bool = False) -> ImageDataset:
    """A :class:`torch.utils.data.Dataset` of float32 (3, resolution, resolution) images in [-1, 1].

    Args:
        source: ``"embedded"``, an image folder, a ``.zip`` of one, a ``.npz`` (key ``x``, uint8 NHWC),
            or ``"cifar10[:ROOT]"`` (see docs/data.md).
        resolution: output side; other sizes are resized (shorter side) and centre-cropped.
        split: ``"train"`` or ``"test"``; used by cifar10 and by folders/zips with top-level train/ and test/.
        labels: items ``(x, y)`` with the class label y (int64 scalar) instead of x alone.

    Raises:
        DataError: missing or malformed data (the message names the path and the expected layout), or
            ``labels=True`` for a source without labels.
    """
    return ImageDataset(open_source(source, split), resolution, labels=labels)


def count_images(source: str | os.PathLike, *, split: str = "train") -> int:
    """The number of images a source holds (for ``split`` where it has one)."""
    return len(open_source(source, split))


def iter_uint8_batches(src: ImageSource, batch_size: int, limit: int | None = None,
                       resolution: int | None = None, *, shard: tuple[int, int] = (0, 1)
                       ) -> Iterator[np.ndarray]:
    """Batches (B, H, W, 3) uint8 of an opened source in order; ``shard=(rank, world)`` keeps batches
    rank, rank + world, ... only (the others are not decoded)."""
    if batch_size < 1:
        raise DataError(f"batch_size must be a positive int, got {batch_size}")
    n = len(src) if limit is None else min(int(limit), len(src))
    rank, world = shard
    for b, start in enumerate(range(0, n, batch_size)):
        if b % world != rank:
            continue
        images = [src.load(i) for i in range(start, min(start + batch_size, n))]
        if resolution is not None:
            images = [resize_center_crop(im, resolution) for im in images]
        shapes = {im.shape for im in images}
        if len(shapes) > 1:
            raise DataError(f"{src.description}: images of different sizes {sorted(shapes)} in one batch; "
                            f"pass resolution=... to resize them to one size")
        yield np.stack(images)


def iter_uint8_images(source: str | os.PathLike, batch_size: int = 250, limit: int | None = None,
                      resolution: int | None = None, *, split: str = "train") -> Iterator[np.ndarray]:
    """Yield uint8 numpy batches (B, H, W, 3) of the first ``limit`` images (all when None).

    Deterministic order (file name, then path; array order for .npz / cifar10), no flip, and no resize
    unless ``resolution`` is given (then shorter side + centre crop, as :func:`build_dataset`).
    """
    return iter_uint8_batches(open_source(source, split), batch_size, limit, resolution)
