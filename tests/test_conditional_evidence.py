"""Evidence that a conditional model learns its labels: tiny_cond.yaml's model, trained briefly on the
embedded CIFAR-10 images (at 16x16), draws class-k samples whose colour layout matches class k's images
better than the other classes', and the same run with shuffled labels (the control) does not.

The statistic of a set of images is its mean image at 2x2 (a mean colour per quadrant: 12 numbers); a class's
samples "match" class j when that statistic is closest to class j's (Euclidean). ``matched`` counts the
classes whose samples are closest to their own class (10 classes: chance is 1).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.utils.data import Dataset

from ctcm.data import EMBEDDED, build_dataset
from ctcm.engine import load_train_config, train
from ctcm.sampling import sample_all

TINY_COND = Path(__file__).resolve().parents[1] / "examples" / "cifar10" / "configs" / "tiny_cond.yaml"
RES = 16
STEPS = 300
PER_CLASS = 30


class Labelled(Dataset):
    """The embedded images at ``RES`` in memory, items (x, y); ``shuffle`` permutes the labels (the control)."""

    def __init__(self, shuffle_seed: int | None = None) -> None:
        ds = build_dataset(EMBEDDED, RES, labels=True)
        self.class_names = ds.class_names
        items = [ds[i] for i in range(len(ds))]
        self.x = torch.stack([x for x, _ in items])
        self.y = torch.stack([y for _, y in items])
        if shuffle_seed is not None:
            self.y = self.y[torch.randperm(len(self.y), generator=torch.Generator().manual_seed(shuffle_seed))]

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[i], self.y[i]


def layout(x: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) -> the mean image at 2x2, flattened (12,)."""
    return torch.nn.functional.adaptive_avg_pool2d(x.mean(0, keepdim=True), 2).flatten()


def evidence(tmp_path: Path, seed: int, shuffle: bool) -> dict[str, float]:
    """Train ``STEPS`` steps (seed ``seed``; shuffled labels when ``shuffle``) and count matched classes."""
    data = Labelled(shuffle_seed=seed if shuffle else None)
    cfg = load_train_config(TINY_COND, [f"model.resolution={RES}", "model.backbone.width=16", "model.backbone.modes=4",
                                        "model.backbone.emb_dim=32", f"steps={STEPS}", f"seed={seed}", "log_every=50",
                                        "sample_every=0", "checkpoint_every=0", "eval.learning_samples=0",
                                        "eval.grid=0", "threads=1"])
    result = train(cfg, tmp_path / f"run-{seed}-{shuffle}", dataset=data, progress=False)
    from ctcm import load_checkpoint

    model = load_checkpoint(result.checkpoint)
    real = Labelled()  # the true labels: what each class looks like
    targets = torch.stack([layout(real.x[real.y == k]) for k in range(10)])
    y = torch.arange(10).repeat_interleave(PER_CLASS)
    samples = sample_all(model, len(y), seed=seed + 100, batch_size=100, cond={"y": y}).float()
    stats = torch.stack([layout(samples[y == k]) for k in range(10)])
    dist = torch.cdist(stats, targets)  # (sample class, data class)
    own = dist.diagonal()
    others = (dist.sum(1) - own) / 9
    return {"matched": int((dist.argmin(1) == torch.arange(10)).sum()),
            "margin": float((others - own).mean())}  # > 0: closer to its own class than to the others on average


@pytest.mark.slow  # two training runs of 300 steps: about a minute on an idle 2-core CPU
def test_conditional_samples_match_their_own_class_and_shuffled_labels_do_not(tmp_path):
    learned, control = evidence(tmp_path, 0, shuffle=False), evidence(tmp_path, 0, shuffle=True)
    assert learned["matched"] >= 5 and learned["margin"] > 0
    assert learned["matched"] >= control["matched"] + 3 and learned["margin"] > 2 * max(control["margin"], 0.0)


if __name__ == "__main__":  # the pass rate over seeds: python tests/test_conditional_evidence.py [SEEDS]
    import sys
    import tempfile

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        for s in range(int(sys.argv[1]) if len(sys.argv) > 1 else 5):
            a, b = evidence(Path(tmp), s, shuffle=False), evidence(Path(tmp), s, shuffle=True)
            ok = a["matched"] >= 5 and a["margin"] > 0 and a["matched"] >= b["matched"] + 3 and \
                a["margin"] > 2 * max(b["margin"], 0.0)
            print(f"seed {s}: labels {a}  shuffled {b}  pass {ok}", flush=True)
