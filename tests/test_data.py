"""Data sources: embedded, folder, zip, npz, cifar10 (offline error), splits, DataLoader workers."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ctcm.data import (EMBEDDED, DataError, build_dataset, count_images, iter_uint8_images, open_source,
                       resize_center_crop)

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10"
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _images(n: int, size: tuple[int, int] = (32, 32), seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, *size, 3), dtype=np.uint8)


def _write_folder(root: Path, images: np.ndarray, classes: tuple[str, ...] = ("cat", "dog")) -> list[str]:
    """Files <class>/<index>.png, so the name order is the index order across classes."""
    names = []
    for i, im in enumerate(images):
        name = f"{classes[i % len(classes)]}/{i:03d}.png" if classes else f"{i:03d}.png"
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(im).save(root / name)
        names.append(name)
    return names


def _zip_folder(root: Path, out: Path) -> Path:
    with zipfile.ZipFile(out, "w") as z:
        for p in sorted(root.rglob("*")):
            if p.is_file():
                z.write(p, p.relative_to(root).as_posix())
    return out


def _all(source, **kw) -> np.ndarray:
    return np.concatenate(list(iter_uint8_images(source, batch_size=3, **kw)))


@pytest.fixture
def image_set(tmp_path: Path) -> tuple[np.ndarray, Path, Path, Path]:
    images = _images(7)
    folder = tmp_path / "folder"
    _write_folder(folder, images)
    zpath = _zip_folder(folder, tmp_path / "images.zip")
    npz = tmp_path / "images.npz"
    np.savez(npz, x=images)
    return images, folder, zpath, npz


# -- embedded --------------------------------------------------------------------------------------------------
def test_embedded_dataset_shape_range_and_size_limit():
    ds = build_dataset(EMBEDDED, 32)
    assert len(ds) == count_images("embedded") == 2000
    x = ds[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32
    assert -1.0 <= x.min() < x.max() <= 1.0
    from ctcm.data.sources import EMBEDDED_FILE
    assert EMBEDDED_FILE.stat().st_size <= 5_000_000


@pytest.mark.skipif(not (SHARED / "cifar10-train-first4000-lossless.npz").is_file(), reason="shared CIFAR-10 absent")
def test_embedded_is_the_first_cifar10_training_images_exactly():
    ref = np.load(SHARED / "cifar10-train-first4000-lossless.npz")["x"]
    got = _all(EMBEDDED, limit=10)
    np.testing.assert_array_equal(got, ref[:10])


# -- folder / zip / npz ------------------------------------------------------------------------------------------
def test_folder_zip_npz_give_the_same_images_in_name_order(image_set):
    images, folder, zpath, npz = image_set
    for source in (folder, zpath, npz, str(folder)):
        np.testing.assert_array_equal(_all(source), images)
        assert count_images(source) == 7


def test_dataset_values_are_uint8_over_127_5_minus_1(image_set):
    images, folder, zpath, npz = image_set
    for source in (folder, zpath, npz):
        ds = build_dataset(source, 32)
        expected = torch.from_numpy(images[2]).permute(2, 0, 1).float() / 127.5 - 1
        torch.testing.assert_close(ds[2], expected)


def test_limit_and_batches(image_set):
    _, folder, _, _ = image_set
    batches = list(iter_uint8_images(folder, batch_size=3, limit=5))
    assert [b.shape for b in batches] == [(3, 32, 32, 3), (2, 32, 32, 3)]
    assert all(b.dtype == np.uint8 for b in batches)


def test_npz_variants(tmp_path):
    images = _images(4)
    np.savez(tmp_path / "nchw.npz", x=images.transpose(0, 3, 1, 2))
    np.savez(tmp_path / "arr0.npz", images)
    np.savez(tmp_path / "named.npz", images=images, y=np.arange(4))
    for name in ("nchw.npz", "arr0.npz", "named.npz"):
        np.testing.assert_array_equal(_all(tmp_path / name), images)
    np.savez(tmp_path / "ambiguous.npz", arr_0=images, images=images)
    with pytest.raises(DataError, match="cannot tell"):
        count_images(tmp_path / "ambiguous.npz")
    np.savez(tmp_path / "float.npz", x=images.astype(np.float32))
    with pytest.raises(DataError, match="uint8"):
        count_images(tmp_path / "float.npz")


def test_any_size_is_resized_and_center_cropped(tmp_path):
    im = np.zeros((40, 80, 3), np.uint8)
    im[:, 20:60] = 255  # the centre 40x40 square is white: the centre crop must be (nearly) all white
    (tmp_path / "wide").mkdir()
    Image.fromarray(im).save(tmp_path / "wide" / "a.png")
    Image.fromarray(_images(1, (50, 30))[0]).save(tmp_path / "wide" / "b.png")
    ds = build_dataset(tmp_path / "wide", 16)
    assert ds[0].shape == ds[1].shape == (3, 16, 16)
    assert ds[0][:, :, 2:-2].min() > 0.9  # interior columns white
    assert resize_center_crop(im, 40).shape == (40, 40, 3)
    np.testing.assert_array_equal(resize_center_crop(im, 40)[:, 2:-2], 255)
    with pytest.raises(DataError, match="different sizes"):
        _all(tmp_path / "wide")
    assert _all(tmp_path / "wide", resolution=8).shape == (2, 8, 8, 3)


def test_train_test_split_in_folder_and_zip(tmp_path):
    root = tmp_path / "set"
    train, test = _images(5, seed=1), _images(3, seed=2)
    _write_folder(root / "train", train)
    _write_folder(root / "test", test)
    zpath = _zip_folder(root, tmp_path / "set.zip")
    for source in (root, zpath):
        assert count_images(source) == 5 and count_images(source, split="test") == 3
        np.testing.assert_array_equal(_all(source, split="test"), test)
        assert len(build_dataset(source, split="test")) == 3
    with pytest.raises(DataError, match="split"):
        build_dataset(root, split="valid")


def test_items_never_flip_and_leave_the_global_rng_alone(image_set):
    """Flips have one owner, the engine's data order: item i is a pure function of i (issue 16, item 5)."""
    _, folder, _, _ = image_set
    ds = build_dataset(folder, 32)
    torch.manual_seed(0)
    state = torch.get_rng_state()
    items = torch.stack([ds[0] for _ in range(16)])
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(x, items[0]) for x in items) and not torch.equal(items[0], items[0].flip(-1))


def test_multiworker_dataloader_over_zip(image_set):
    images, _, zpath, _ = image_set
    ds = build_dataset(zpath, 32)
    ds[0]  # the parent opens its handle first: workers must still get their own
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2)
    got = torch.cat(list(loader))
    expected = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
    torch.testing.assert_close(got, expected)


# -- errors ------------------------------------------------------------------------------------------------------
def test_missing_and_malformed_sources_raise_data_error(tmp_path):
    assert issubclass(DataError, ValueError)
    with pytest.raises(DataError, match="no such file") as exc:
        build_dataset(tmp_path / "nope")
    assert str(tmp_path / "nope") in str(exc.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no image files"):
        build_dataset(tmp_path / "empty")
    (tmp_path / "bad.zip").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="not a readable zip"):
        build_dataset(tmp_path / "bad.zip")
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(DataError, match="unsupported file type"):
        build_dataset(tmp_path / "notes.txt")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "x.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="cannot decode"):
        build_dataset(tmp_path / "broken")[0]


def test_cifar10_offline_raises_data_error_with_the_way_out(tmp_path, monkeypatch):
    import torchvision.datasets

    class OfflineCIFAR10:
        base_folder = "cifar-10-batches-py"

        def __init__(self, root, train=True, download=False):
            if not download:
                raise RuntimeError("Dataset not found or corrupted.")
            raise OSError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", OfflineCIFAR10)
    with pytest.raises(DataError, match="network") as exc:
        build_dataset(f"cifar10:{tmp_path}")
    assert "--data" in str(exc.value) and str(tmp_path) in str(exc.value)


def test_cifar10_from_a_local_copy(tmp_path, monkeypatch):
    import torchvision.datasets

    images = _images(6)

    class LocalCIFAR10:
        base_folder = "cifar-10-batches-py"

        def __init__(self, root, train=True, download=False):
            (Path(root) / self.base_folder).mkdir(parents=True, exist_ok=True)
            (Path(root) / self.base_folder / "data_batch_1").write_bytes(b"x")
            self.data = images[:4] if train else images[4:]
            self.targets = [6, 9, 9, 4] if train else [3, 8]
            self.classes = CIFAR10_CLASSES

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", LocalCIFAR10)
    assert count_images(f"cifar10:{tmp_path}") == 4
    np.testing.assert_array_equal(_all(f"cifar10:{tmp_path}", split="test"), images[4:])
    assert build_dataset(f"cifar10:{tmp_path}")[0].shape == (3, 32, 32)
    labelled = build_dataset(f"cifar10:{tmp_path}", labels=True, split="test")
    assert [int(labelled[i][1]) for i in range(2)] == [3, 8] and labelled.class_names == CIFAR10_CLASSES


def test_fingerprint_changes_with_the_files(image_set):
    images, folder, zpath, npz = image_set
    before = [open_source(s).fingerprint() for s in (folder, zpath, npz)]
    Image.fromarray(_images(1, seed=9)[0]).save(folder / "cat" / "000.png")
    np.savez(npz, x=images[:5])
    with zipfile.ZipFile(zpath, "a") as z:
        z.writestr("extra.png", (folder / "cat" / "000.png").read_bytes())
    after = [open_source(s).fingerprint() for s in (folder, zpath, npz)]
    assert all(a != b for a, b in zip(before, after))


# -- labels ------------------------------------------------------------------------------------------------------
def test_folder_and_zip_labels_are_the_sorted_class_folders(image_set):
    images, folder, zpath, npz = image_set
    for source in (folder, zpath):
        src = open_source(source)
        assert src.class_names == ["cat", "dog"]
        np.testing.assert_array_equal(src.labels, np.arange(7) % 2)  # _write_folder: image i in class i % 2
        ds = build_dataset(source, 32, labels=True)
        x, y = ds[3]
        assert y.dtype == torch.int64 and int(y) == 1
        torch.testing.assert_close(x, torch.from_numpy(images[3]).permute(2, 0, 1).float() / 127.5 - 1)


def test_split_folder_labels_skip_the_split_level(tmp_path):
    images = _images(4)
    _write_folder(tmp_path / "d" / "train", images[:2], classes=("ship", "frog"))
    _write_folder(tmp_path / "d" / "test", images[2:], classes=("truck", "ship"))
    assert open_source(tmp_path / "d", "train").class_names == ["frog", "ship"]
    np.testing.assert_array_equal(open_source(tmp_path / "d", "test").labels, [1, 0])


def test_flat_folder_and_plain_npz_have_no_labels_and_refuse_a_labelled_dataset(tmp_path, image_set):
    _, _, _, npz = image_set
    flat = tmp_path / "flat"
    _write_folder(flat, _images(3), classes=())
    for source in (flat, npz):
        assert open_source(source).labels is None
        with pytest.raises(DataError, match="has no class labels.*model.num_classes=0"):
            build_dataset(source, labels=True)


def test_npz_labels_and_class_names(tmp_path):
    images = _images(5)
    np.savez(tmp_path / "a.npz", x=images, y=np.array([2, 0, 1, 2, 0]), classes=np.array(["a", "b", "c"]))
    src = open_source(tmp_path / "a.npz")
    assert src.class_names == ["a", "b", "c"] and src.labels.tolist() == [2, 0, 1, 2, 0]
    np.savez(tmp_path / "b.npz", x=images, y=np.array([3, 0, 1, 2, 0]))
    assert open_source(tmp_path / "b.npz").class_names == ["0", "1", "2", "3"]
    for name, y, match in (("c", np.zeros(4, np.int64), r"expected integers \(N,\) = \(5,\)"),
                           ("d", np.zeros(5), "expected integers"),
                           ("e", np.array([0, 1, 2, 3, 4]), r"3 class names; labels must be 0..2")):
        extra = {"classes": np.array(["a", "b", "c"])} if name == "e" else {}
        np.savez(tmp_path / f"{name}.npz", x=images, y=y, **extra)
        with pytest.raises(DataError, match=match):
            open_source(tmp_path / f"{name}.npz")


def test_embedded_labels_are_cifar10s():
    src = open_source(EMBEDDED)
    assert src.class_names == CIFAR10_CLASSES
    assert src.labels[:3].tolist() == [6, 9, 9]  # frog, truck, truck: the first CIFAR-10 training images
    assert np.bincount(src.labels).min() > 150


@pytest.mark.skipif(not (SHARED / "cifar10-train-first4000-lossless.npz").is_file(), reason="needs ../shared")
def test_embedded_labels_equal_the_lossless_copys_y():
    with np.load(SHARED / "cifar10-train-first4000-lossless.npz") as data:
        y = data["y"][:2000]
    np.testing.assert_array_equal(open_source(EMBEDDED).labels, y)
