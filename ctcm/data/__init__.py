"""Data sources for training and evaluation.

    from ctcm.data import build_dataset, iter_uint8_images
    ds = build_dataset("embedded", 32)            # ds[i]: float32 (3, 32, 32) in [-1, 1]
    for batch in iter_uint8_images("data.zip", batch_size=250):   # uint8 (B, H, W, 3)
        ...

A source is ``"embedded"`` (2,000 CIFAR-10 training images shipped in the package), an image folder, a
``.zip`` of one, a ``.npz`` of uint8 images, or ``"cifar10[:ROOT]"``. See docs/data.md.
"""

from .dataset import ImageDataset, build_dataset, count_images, iter_uint8_images, resize_center_crop
from .sources import EMBEDDED, DataError, ImageSource, open_source

__all__ = ["EMBEDDED", "DataError", "ImageDataset", "ImageSource", "build_dataset", "count_images",
           "iter_uint8_images", "open_source", "resize_center_crop"]
