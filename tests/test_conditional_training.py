"""Class-conditional training: labels through the data order (flips, label dropout), ``ctcm train`` on the
embedded data and the CIFAR-10 zip, exact resume, and the errors of a conditional run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

import ctcm
from ctcm.cli import main
from ctcm.config import ConfigError
from ctcm.engine import load_train_config, train
from ctcm.engine.data_order import OrderedDataset, StepBatchSampler, epoch_order

ROOT = Path(__file__).resolve().parents[1]
TINY_COND = ROOT / "examples" / "cifar10" / "configs" / "tiny_cond.yaml"
COND = ROOT / "examples" / "cifar10" / "configs" / "cond_cifar.yaml"
ZIP = ROOT.parent / "shared" / "data" / "cifar10" / "cifar10-jpeg75.zip"
SMALL = ["model.backbone.width=8", "model.backbone.n_layers=1", "model.backbone.modes=4",
         "model.backbone.emb_dim=16", "model.resolution=16", "batch_size=8", "log_every=2", "sample_every=0",
         "checkpoint_every=0", "eval.learning_samples=0", "eval.grid=0", "optim.warmup_steps=2",
         "objective.1.warmup_steps=3", "data.heldout=0", "--device", "cpu", "--no-progress"]


class LabelledToy(Dataset):
    """n images whose first pixel row encodes the label (x[:, 0, :] = label / 10) and whose left half is
    brighter than the right (so a flip is visible); items (x (3, 4, 4), y)."""

    class_names = [str(k) for k in range(10)]

    def __init__(self, n: int = 30) -> None:
        self.y = torch.arange(n) % 10
        self.x = torch.zeros(n, 3, 4, 4)
        self.x[:, :, 1:, :2] = 1.0
        self.x[:, :, 0, :] = (self.y.float() / 10)[:, None, None]

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[i], self.y[i]


def test_label_dropout_leaves_the_order_and_flips_alone_and_is_a_function_of_seed_and_step():
    perm, flips, drops = epoch_order(1000, 3, 2, True, 0.1)
    perm0, flips0, none = epoch_order(1000, 3, 2, True, 0.0)
    assert torch.equal(perm, perm0) and torch.equal(flips, flips0) and not none.any()
    assert 0.07 < drops.float().mean() < 0.13
    full = [next(iter(StepBatchSampler(20, 6, seed=3, start_step=s, label_dropout=0.5))) for s in range(7)]
    ranks = [StepBatchSampler(20, 6, seed=3, start_step=4, rank=r, world_size=2, label_dropout=0.5) for r in range(2)]
    assert next(iter(ranks[0])) + next(iter(ranks[1])) == full[4]  # the global batch, for any number of ranks


def test_flips_and_label_dropout_keep_image_and_label_together():
    data = OrderedDataset(LabelledToy(), null_label=10)
    sampler = StepBatchSampler(30, 10, seed=0, label_dropout=0.3)
    seen_null = seen_flip = 0
    for _, batch in zip(range(6), sampler):
        for item in batch:
            x, y = data[item]
            index, flip, drop, _ = item
            assert round(float(x[0, 0, 0]) * 10) == index % 10  # the image is image `index`
            assert int(y) == (10 if drop else index % 10)
            assert bool(x[0, 1, 3] > x[0, 1, 0]) == flip  # mirrored exactly when the order says so
            seen_null, seen_flip = seen_null + drop, seen_flip + flip
    assert seen_null > 0 and seen_flip > 0
    assert not isinstance(OrderedDataset(LabelledToy())[(0, False, False)], tuple)  # unconditional: images only


def test_conditional_configs_load_and_check_their_keys():
    for path in (TINY_COND, COND):
        cfg = load_train_config(path)
        assert cfg.model.num_classes == 10 and cfg.data.label_dropout == 0.1 and cfg.recipe == "wfno-cifar-cond"
    with pytest.raises(ConfigError, match="label_dropout=0.2 needs a class-conditional model"):
        load_train_config(None, ["data.label_dropout=0.2"])
    with pytest.raises(ConfigError, match=r"label_dropout must be in \[0, 1\)"):
        load_train_config(TINY_COND, ["data.label_dropout=1.0"])


def _weights(path: Path) -> dict[str, torch.Tensor]:
    payload = ctcm.read_checkpoint(path)
    return {**{f"model.{k}": v for k, v in payload["model"].items()},
            **{f"ema.{k}": v for k, v in payload["ema"]["model"].items()}}


def test_ctcm_train_on_the_embedded_data_resumes_exactly(tmp_path, capsys):
    run = ["train", "--config", str(TINY_COND), *SMALL, "optim.decay_steps=6", "data.label_dropout=0.5"]
    assert main([*run, "--out", str(tmp_path / "one"), "--steps", "6"]) == 0
    assert main([*run, "--out", str(tmp_path / "two"), "--steps", "3"]) == 0
    assert main(["train", "--out", str(tmp_path / "two"), "--resume", "--steps", "6", "--device", "cpu",
                 "--no-progress"]) == 0
    a, b = _weights(tmp_path / "one/checkpoints/latest.pt"), _weights(tmp_path / "two/checkpoints/latest.pt")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    labels = a["model.backbone.embed.labels.weight"]
    assert labels.shape == (11, 16)  # 10 classes + the null class
    model = ctcm.load_checkpoint(tmp_path / "one/checkpoints/latest.pt")
    assert model.num_classes == 10 and model.class_names[:2] == ["airplane", "automobile"]
    capsys.readouterr()
    assert main(["train", "--out", str(tmp_path / "two"), "--resume", "--steps", "8", "--device", "cpu",
                 "data.label_dropout=0.1"]) == 2
    assert "--resume cannot change data.label_dropout: 0.5 -> 0.1" in capsys.readouterr().err


@pytest.mark.skipif(not ZIP.is_file(), reason="needs ../shared's CIFAR-10 zip")
def test_ctcm_train_on_the_cifar10_zip(tmp_path):
    assert main(["train", "--config", str(TINY_COND), *SMALL, "--data", str(ZIP), "--out", str(tmp_path / "z"),
                 "--steps", "2"]) == 0
    assert ctcm.load_checkpoint(tmp_path / "z/checkpoints/latest.pt").class_names[-1] == "truck"


def test_an_unlabelled_source_or_the_wrong_class_count_is_one_clear_error(tmp_path, capsys):
    np.savez(tmp_path / "plain.npz", x=np.zeros((16, 16, 16, 3), np.uint8))
    assert main(["train", "--config", str(TINY_COND), *SMALL, "--data", str(tmp_path / "plain.npz"),
                 "--out", str(tmp_path / "a"), "--steps", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "has no class labels" in err[0] and "model.num_classes=0" in err[0]
    np.savez(tmp_path / "three.npz", x=np.zeros((16, 16, 16, 3), np.uint8), y=np.arange(16) % 3)
    assert main(["train", "--config", str(TINY_COND), *SMALL, "--data", str(tmp_path / "three.npz"),
                 "--out", str(tmp_path / "b"), "--steps", "1"]) == 2
    assert "has 3 classes (0, 1, 2) but model.num_classes=10; set model.num_classes=3" in capsys.readouterr().err


def test_a_conditional_run_passes_the_labels_to_the_objective(tmp_path, monkeypatch):
    seen: list[torch.Tensor] = []
    original = ctcm.objective.ObjectiveContext.__init__

    def spy(self, *args, cond=None, **kwargs):
        seen.append(cond["y"].clone())
        original(self, *args, cond=cond, **kwargs)

    monkeypatch.setattr(ctcm.objective.ObjectiveContext, "__init__", spy)
    cfg = load_train_config(TINY_COND, SMALL[:-3] + ["steps=2", "data.label_dropout=0.5", "model.resolution=4"])
    train(cfg, tmp_path, dataset=LabelledToy(), progress=False)
    sampler = iter(StepBatchSampler(30, 8, seed=0, label_dropout=0.5))
    for y in seen:
        expected = [10 if drop else index % 10 for index, _, drop, _ in next(sampler)]
        assert y.tolist() == expected
