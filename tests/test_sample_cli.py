"""``ctcm sample``: N images of the right shape and dtype, reproducible, the same for any number of ranks."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import ctcm
from ctcm.cli import main
from ctcm.sampling_cli import main_sample

SAMPLE_PY = Path(__file__).resolve().parents[1] / "examples" / "cifar10" / "sample.py"


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    torch.manual_seed(0)
    model = ctcm.build("wfno-cifar", backbone={"width": 8, "n_layers": 1, "modes": 4, "emb_dim": 16}, resolution=16)
    ema = ctcm.EMA(model, decay=0.9)
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    ctcm.save_checkpoint(path, model, ema=ema, step=0)
    return path


@pytest.mark.parametrize("steps", [1, 2])
def test_writes_npz_and_pngs(ckpt, tmp_path, steps):
    npz, folder = tmp_path / "s.npz", tmp_path / "png"
    rc = main(["sample", "--ckpt", str(ckpt), "--num-samples", "11", "--batch-size", "4", "--steps", str(steps),
               "--npz", str(npz), "--out", str(folder), "--device", "cpu", "--no-progress"])
    assert rc == 0
    x = np.load(npz)["x"]
    assert x.shape == (11, 16, 16, 3) and x.dtype == np.uint8
    pngs = sorted(folder.glob("*.png"))
    assert [p.name for p in pngs] == [f"{i:06d}.png" for i in range(11)]
    assert np.array_equal(np.asarray(Image.open(pngs[7])), x[7])
    assert not list(tmp_path.glob(".*"))  # no leftover parts or temporary files


def test_seed_reproduces_and_changes(ckpt, tmp_path):
    def run(name, seed):
        assert main_sample(["--ckpt", str(ckpt), "--num-samples", "6", "--batch-size", "4", "--seed", str(seed),
                            "--npz", str(tmp_path / name), "--device", "cpu", "--no-progress"]) == 0
        return np.load(tmp_path / name)["x"]
    a, b, c = run("a.npz", 1), run("b.npz", 1), run("c.npz", 2)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_rank_split_gives_the_same_images(ckpt):
    model = ctcm.load_checkpoint(ckpt)
    whole = model.sample(10, steps=2, seed=3, batch_size=4)
    parts = {}
    for rank in range(3):
        for start, x in model.sample_batches(10, steps=2, seed=3, batch_size=4, rank=rank, world_size=3):
            parts[start] = x
    assert sorted(parts) == [0, 4, 8]
    assert torch.equal(torch.cat([parts[k] for k in sorted(parts)]), whole)


def test_clear_errors(tmp_path, capsys):
    assert main_sample(["--ckpt", str(tmp_path / "none.pt"), "--npz", str(tmp_path / "x.npz"), "--device", "cpu"]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
    assert main_sample(["--ckpt", str(tmp_path / "none.pt"), "--device", "cpu"]) == 2
    assert "--out DIR" in capsys.readouterr().err


@pytest.mark.slow
def test_torchrun_two_ranks_write_the_same_npz(ckpt, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torchrun = Path(sys.executable).parent / "torchrun"
    args = ["--ckpt", str(ckpt), "--num-samples", "10", "--batch-size", "3", "--steps", "2", "--seed", "5",
            "--device", "cpu", "--no-progress"]
    done = subprocess.run([str(torchrun), "--nnodes", "1", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
                           "--master_port", str(port), str(SAMPLE_PY), *args, "--npz", str(tmp_path / "ddp.npz"),
                           "--out", str(tmp_path / "png")],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    assert main_sample([*args, "--npz", str(tmp_path / "one.npz")]) == 0
    ddp, one = np.load(tmp_path / "ddp.npz")["x"], np.load(tmp_path / "one.npz")["x"]
    assert ddp.shape == (10, 16, 16, 3) and np.array_equal(ddp, one)
    assert len(list((tmp_path / "png").glob("*.png"))) == 10
