"""Image sources: a source string -> an indexable set of uint8 RGB images (H, W, 3).

Source strings (see docs/data.md):

- ``"embedded"``: the 2,000 CIFAR-10 training images shipped in the package (a zip of PNGs);
- a folder (ImageFolder layout: class subfolders, or flat) or a ``.zip`` of one (read in place);
- a ``.npz`` with uint8 images under ``x`` (or an unambiguous ``arr_0`` / ``images``), NHWC or NCHW, and
  optionally integer class labels under ``y`` (with their names under ``classes``);
- ``"cifar10"`` or ``"cifar10:ROOT"``: torchvision's CIFAR-10 (downloaded there when missing).

Labels: a source whose every image lies in a class subfolder (below the split folder, if any) is labelled
as torchvision's ImageFolder labels it: the class folders sorted by name get 0, 1, ... (for CIFAR-10:
airplane automobile bird cat deer dog frog horse ship truck, its own label order). ``src.labels`` is then
int64 (N,) and ``src.class_names`` the names; both are None for an unlabelled source.

Files are ordered by file name, then by path (``train/frog/00000.jpg`` before ``train/truck/00001.jpg``), so
the order is deterministic, class folders interleave, and a ``limit`` takes a class-mixed prefix. A folder or
zip whose top level holds ``train/`` and ``test/`` is split: ``split`` picks one of them.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..errors import UserValueError

EMBEDDED = "embedded"
EMBEDDED_FILE = Path(__file__).resolve().parent / "embedded" / "cifar10-train-first2000.zip"
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
SPLITS = ("train", "test")
_LAYOUT = ("expected an image folder (class subfolders or flat, optionally with top-level train/ and test/), "
           "a .zip of one, a .npz with uint8 images under 'x' (N, H, W, 3), 'embedded', or 'cifar10[:ROOT]'")


class DataError(UserValueError):
    """Missing or malformed data: the message names the path and the expected layout."""


def _sort_key(name: str) -> tuple[str, str]:
    return (name.rsplit("/", 1)[-1], name)


def _pick_split(names: list[str], split: str, where: str) -> list[str]:
    """Keep the names under ``split/`` when the top level is exactly a train/test split; strip nothing."""
    if split not in SPLITS:
        raise DataError(f"split must be one of {SPLITS}, got {split!r}")
    tops = {n.split("/", 1)[0] for n in names if "/" in n}
    if "train" in tops and "test" in tops:
        chosen = [n for n in names if n.startswith(split + "/")]
        if not chosen:
            raise DataError(f"{where}: no images under {split}/; {_LAYOUT}")
        return chosen
    return names


def to_rgb8(im: Image.Image) -> np.ndarray:
    """(H, W, 3) uint8 of a PIL image. 16- and 32-bit integer images (PNG ``I;16``/``I``) are scaled from
    their bit depth to 8 bits (PIL's own conversion clips them, turning most pixels white)."""
    if im.mode.startswith("I;16") or im.mode == "I":
        bits = 16 if im.mode.startswith("I;16") else 32
        a = np.asarray(im, dtype=np.float64) if im.mode == "I" else np.asarray(im).astype(np.float64)
        if im.mode == "I" and a.max(initial=0) < 2 ** 16:  # 16-bit PNGs open as mode I in some PIL versions
            bits = 16
        a = np.clip(np.round(a / (2 ** bits - 1) * 255), 0, 255).astype(np.uint8)
        return np.repeat(a[..., None], 3, axis=-1) if a.ndim == 2 else a[..., :3]
    return np.asarray(im.convert("RGB"), dtype=np.uint8)


def _decode(data: Any, where: str) -> np.ndarray:
    try:
        with Image.open(data) as im:
            return to_rgb8(im)
    except Exception as exc:  # PIL raises several types for a bad file
        raise DataError(f"{where}: cannot decode image ({exc})") from exc


class ImageSource:
    """An indexable set of uint8 images: ``len(src)``, ``src.load(i) -> (H, W, 3) uint8``.

    ``describe`` names the source; ``fingerprint`` changes whenever the underlying files change (size and
    mtime of the files read), which is what the FID statistics cache keys on.
    """

    description: str
    #: class label of every image, int64 (N,) in [0, len(class_names)), or None for an unlabelled source
    labels: np.ndarray | None = None
    #: the name of each class, index = label
    class_names: list[str] | None = None

    def __len__(self) -> int:
        raise NotImplementedError

    def load(self, index: int) -> np.ndarray:
        raise NotImplementedError

    def fingerprint(self) -> str:
        raise NotImplementedError


def folder_labels(names: list[str], split: str) -> tuple[np.ndarray | None, list[str] | None]:
    """ImageFolder labels of relative file names: the first folder below ``split/`` (when the names carry
    one) is the class; classes sorted by name are 0, 1, ... (None, None) when any file lies outside a
    class folder (a flat layout)."""
    parts = [n.split("/") for n in names]
    depth = 1 if names and all(p[0] == split and len(p) > 1 for p in parts) else 0
    if not names or any(len(p) < depth + 2 for p in parts):
        return None, None
    classes = sorted({p[depth] for p in parts})
    index = {c: k for k, c in enumerate(classes)}
    return np.asarray([index[p[depth]] for p in parts], dtype=np.int64), classes


def checked_labels(y: np.ndarray, n: int, names: list[str] | None, where: str) -> tuple[np.ndarray, list[str]]:
    """Integer labels (n,) in [0, K) as int64 with K class names (``names``, else "0".."K-1")."""
    if y.ndim != 1 or len(y) != n or not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{where}: labels 'y' are {y.dtype} {y.shape}; expected integers (N,) = ({n},), one per image")
    k = len(names) if names is not None else int(y.max(initial=-1)) + 1
    if len(y) and (y.min() < 0 or y.max() >= k):
        raise DataError(f"{where}: labels 'y' span [{y.min()}, {y.max()}] but there are {k} class names; "
                        f"labels must be 0..{k - 1}")
    return y.astype(np.int64), list(names) if names is not None else [str(c) for c in range(k)]


class ArraySource(ImageSource):
    """Images held in memory as one uint8 array (N, H, W, 3), with optional labels (N,) and class names."""

    def __init__(self, images: np.ndarray, description: str, fingerprint: str, labels: np.ndarray | None = None,
                 class_names: list[str] | None = None) -> None:
        self.images = images
        self.description = description
        self._fingerprint = fingerprint
        if labels is not None:
            self.labels, self.class_names = checked_labels(labels, len(images), class_names, description)

    def __len__(self) -> int:
        return len(self.images)

    def load(self, index: int) -> np.ndarray:
        return self.images[index]

    def fingerprint(self) -> str:
        return self._fingerprint


class FolderSource(ImageSource):
    """Image files under a folder, found recursively."""

    def __init__(self, root: Path, split: str) -> None:
        self.root = root
        names = [p.relative_to(root).as_posix() for p in root.rglob("*")
                 if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()]
        names = sorted(_pick_split(names, split, str(root)), key=_sort_key)
        if not names:
            raise DataError(f"{root}: no image files ({', '.join(IMAGE_EXTENSIONS)}) found; {_LAYOUT}")
        self.names = names
        self.description = f"folder {root}" + (f" [{split}]" if names[0].startswith(split + "/") else "")
        self.labels, self.class_names = folder_labels(names, split)

    def __len__(self) -> int:
        return len(self.names)

    def load(self, index: int) -> np.ndarray:
        return _decode(self.root / self.names[index], str(self.root / self.names[index]))

    def fingerprint(self) -> str:
        return _fingerprint_files(self.root, self.names)


class ZipSource(ImageSource):
    """Image files inside a zip, read in place. The zip handle is opened lazily once per process, so a
    multi-worker DataLoader (fork or spawn) gets its own handle in every worker."""

    def __init__(self, path: Path, split: str) -> None:
        self.path = path
        try:
            with zipfile.ZipFile(path) as z:
                names = [n for n in z.namelist() if n.lower().endswith(IMAGE_EXTENSIONS) and not n.endswith("/")
                         and not n.startswith("__MACOSX/")]
        except (zipfile.BadZipFile, OSError) as exc:
            raise DataError(f"{path}: not a readable zip file ({exc}); {_LAYOUT}") from exc
        names = sorted(_pick_split(names, split, str(path)), key=_sort_key)
        if not names:
            raise DataError(f"{path}: the zip holds no image files ({', '.join(IMAGE_EXTENSIONS)}); {_LAYOUT}")
        self.names = names
        self.description = f"zip {path}" + (f" [{split}]" if names[0].startswith(split + "/") else "")
        self.labels, self.class_names = folder_labels(names, split)
        self._zip: zipfile.ZipFile | None = None
        self._pid = -1

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_zip"], state["_pid"] = None, -1
        return state

    def _handle(self) -> zipfile.ZipFile:
        if self._zip is None or self._pid != os.getpid():
            self._zip, self._pid = zipfile.ZipFile(self.path), os.getpid()
        return self._zip

    def __len__(self) -> int:
        return len(self.names)

    def load(self, index: int) -> np.ndarray:
        name = self.names[index]
        with self._handle().open(name) as f:
            return _decode(f, f"{self.path}:{name}")

    def fingerprint(self) -> str:
        return file_fingerprint(self.path)


def file_fingerprint(path: Path) -> str:
    """``SIZE-MTIME_NS`` of a file: changes whenever the file is rewritten."""
    st = path.stat()
    return f"{st.st_size}-{st.st_mtime_ns}"


def _fingerprint_files(root: Path, names: list[str]) -> str:
    """sha1 over (name, :func:`file_fingerprint`) of the files ``names`` under ``root``."""
    h = hashlib.sha1()
    for name in names:
        h.update(f"{name}\0{file_fingerprint(root / name)}\n".encode())
    return h.hexdigest()


def _npz_image_key(keys: list[str], path: Path) -> str:
    if "x" in keys:
        return "x"
    candidates = [k for k in ("arr_0", "images") if k in keys]
    if len(candidates) != 1:
        raise DataError(f"{path}: cannot tell which array holds the images (keys {keys}); store them under 'x' "
                        f"as uint8 (N, H, W, 3)")
    return candidates[0]


def load_npz(path: Path) -> ArraySource:
    """An :class:`ArraySource` of a .npz: uint8 images under ``x`` (else a single ``arr_0`` / ``images``;
    NCHW is transposed), labels under ``y`` when present, their names under ``classes`` when present."""
    try:
        with np.load(path, allow_pickle=False) as data:
            keys = list(data.files)
            key = _npz_image_key(keys, path)
            x = data[key]
            y = data["y"] if "y" in keys else None
            names = [str(c) for c in data["classes"]] if "classes" in keys else None
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"{path}: not a readable .npz ({exc}); {_LAYOUT}") from exc
    if x.dtype != np.uint8 or x.ndim != 4:
        raise DataError(f"{path}: '{key}' is {x.dtype} {x.shape}; expected uint8 (N, H, W, 3) or (N, 3, H, W)")
    if x.shape[-1] != 3 and x.shape[1] == 3:
        x = x.transpose(0, 2, 3, 1)
    if x.shape[-1] != 3:
        raise DataError(f"{path}: '{key}' has shape {x.shape}; expected (N, H, W, 3) or (N, 3, H, W) RGB")
    if len(x) == 0:
        raise DataError(f"{path}: '{key}' holds no images")
    return ArraySource(np.ascontiguousarray(x), f"npz {path}", file_fingerprint(path), labels=y, class_names=names)


def _cifar10(root: str, split: str) -> ArraySource:
    from torchvision.datasets import CIFAR10

    root_path = Path(root).expanduser()
    train = split == "train"
    try:
        ds = CIFAR10(str(root_path), train=train, download=False)
    except RuntimeError:  # not there yet: try the network
        try:
            ds = CIFAR10(str(root_path), train=train, download=True)
        except Exception as exc:
            raise DataError(
                f"cifar10: not found under {root_path} and the download failed ({exc.__class__.__name__}: {exc}). "
                f"It needs network access once, or pass --data pointing at a local copy (an image folder, "
                f".zip or .npz; e.g. 'cifar10:/path/to/root' holding cifar-10-batches-py/)") from exc
    batch_dir = root_path / CIFAR10.base_folder
    return ArraySource(np.asarray(ds.data, dtype=np.uint8), f"cifar10 {root_path} [{split}]",
                       _fingerprint_files(batch_dir, sorted(os.listdir(batch_dir))),
                       labels=np.asarray(ds.targets, dtype=np.int64), class_names=list(ds.classes))


def default_cifar10_root() -> Path:
    return Path(os.environ.get("CTCM_DATA_DIR", Path.home() / ".cache" / "ctcm")) / "cifar10"


def open_source(source: str | os.PathLike, split: str = "train") -> ImageSource:
    """The :class:`ImageSource` for a source string; raises :class:`DataError` naming the path and layout."""
    if split not in SPLITS:
        raise DataError(f"split must be one of {SPLITS}, got {split!r}")
    text = os.fspath(source)
    if text == EMBEDDED:
        if not EMBEDDED_FILE.is_file():
            raise DataError(f"the embedded dataset {EMBEDDED_FILE} is missing; reinstall ctcm")
        src = ZipSource(EMBEDDED_FILE, split)
        src.description = f"embedded ({EMBEDDED_FILE.name})"
        return src
    if text == "cifar10" or text.startswith("cifar10:"):
        root = text.split(":", 1)[1] if ":" in text else str(default_cifar10_root())
        return _cifar10(root, split)
    path = Path(text).expanduser()
    if path.is_dir():
        return FolderSource(path.resolve(), split)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder; {_LAYOUT}")
    suffix = path.suffix.lower()
    if suffix == ".zip":
        return ZipSource(path.resolve(), split)
    if suffix == ".npz":
        return load_npz(path.resolve())
    raise DataError(f"{path}: unsupported file type {suffix!r}; {_LAYOUT}")
