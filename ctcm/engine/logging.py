"""Run outputs: the metrics CSV (plus TensorBoard when installed), image grids and plots."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw
from torch import Tensor

from ..sampling import to_uint8


ROW_LABEL_WIDTH = 72  # pixels of the left margin that holds a grid's row labels (PIL's default font)


def save_grid(x: Tensor, path: str | Path, nrow: int | None = None, row_labels: list[str] | None = None) -> Path:
    """Tile (B, C, H, W) images in [-1, 1] into one PNG, ``nrow`` per row (default ceil(sqrt(B))); with
    ``row_labels`` each row is named in a left margin (a class-conditional grid: one row per class)."""
    images = to_uint8(x)
    b, h, w, c = images.shape
    nrow = nrow or math.ceil(math.sqrt(b))
    rows = math.ceil(b / nrow)
    margin = ROW_LABEL_WIDTH if row_labels else 0
    canvas = np.zeros((rows * (h + 2) + 2, margin + nrow * (w + 2) + 2, c), dtype=np.uint8)
    for i, img in enumerate(images):
        r, q = divmod(i, nrow)
        canvas[2 + r * (h + 2):2 + r * (h + 2) + h, margin + 2 + q * (w + 2):margin + 2 + q * (w + 2) + w] = img
    im = Image.fromarray(canvas.squeeze(-1) if c == 1 else canvas)
    if row_labels:
        draw = ImageDraw.Draw(im)
        for r, label in enumerate(row_labels[:rows]):
            draw.text((2, 2 + r * (h + 2) + max(0, h // 2 - 6)), label[:12], fill=255 if c == 1 else (255,) * 3)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path)
    return path


class MetricsLogger:
    """Appends rows to ``train.csv`` (columns fixed by the first row; keys that appear later are not
    written) and mirrors them to TensorBoard when ``tensorboard`` is installed.

    ``resume_step``: continue an existing file, dropping rows past that step (logged after the checkpoint
    that is resumed from); None starts a new file.
    """

    def __init__(self, out: str | Path, resume_step: int | None = None, tensorboard: bool = True) -> None:
        self.path = Path(out) / "train.csv"
        self.columns: list[str] | None = None
        if resume_step is not None and self.path.is_file():
            with self.path.open(newline="") as fh:
                rows = list(csv.reader(fh))
            if rows:
                self.columns = rows[0]
                col = self.columns.index("step")
                kept = [r for r in rows[1:] if float(r[col]) <= resume_step]
                with self.path.open("w", newline="") as fh:
                    csv.writer(fh).writerows([self.columns, *kept])
        elif self.path.exists():
            self.path.unlink()
        self.tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.tb = SummaryWriter(str(Path(out) / "tensorboard"))
            except ImportError:  # optional dependency
                self.tb = None

    def log(self, row: dict[str, Any]) -> None:
        if self.columns is None:
            self.columns = list(row)
            with self.path.open("w", newline="") as fh:
                csv.writer(fh).writerow(self.columns)
        with self.path.open("a", newline="") as fh:
            csv.writer(fh).writerow([row.get(k, "") for k in self.columns])
        if self.tb is not None:
            for k, v in row.items():
                if k != "step" and isinstance(v, (int, float)):
                    self.tb.add_scalar(k, v, row["step"])

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def read_csv(path: str | Path) -> dict[str, list[float]]:
    """Columns of a metrics CSV as float lists (empty cells -> nan)."""
    with Path(path).open() as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        return {}
    return {k: [float(r[k]) if r[k] not in ("", None) else math.nan for r in rows] for k in rows[0]}


def loss_panels(columns: list[str], labels: list[str]) -> list[list[str]]:
    """The columns of each loss panel: [``loss`` and the terms ``labels``], [the terms' ``label/key`` logs];
    empty panels are dropped."""
    panels = [[k for k in ["loss", *labels] if k in columns],
              [k for k in columns if "/" in k and k.split("/", 1)[0] in labels]]
    return [keys for keys in panels if keys]


def plot_losses(csv_path: str | Path, path: str | Path, labels: list[str]) -> Path | None:
    """Loss curves against step from ``train.csv``, log scale: the total ``loss`` and each term of
    ``labels`` (an objective's :meth:`~ctcm.Objective.labels`) in one panel, the terms' extra logs
    (columns ``label/key``) in a second panel when there are any; log scale unless a value is <= 0."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = read_csv(csv_path) if Path(csv_path).is_file() else {}
    if "step" not in cols:
        return None
    panels = loss_panels(list(cols), labels)
    if not panels:
        return None
    fig, axes = plt.subplots(len(panels), 1, figsize=(7, 4 * len(panels)), squeeze=False)
    for ax, keys in zip(axes[:, 0], panels):
        series = {k: np.asarray(cols[k]) for k in keys if np.isfinite(np.asarray(cols[k])).any()}
        for k, ys in series.items():
            ax.plot(cols["step"], ys, label=k)
        # log scale when every value is positive; a loss that can go negative (sCM's adaptive weighting) is linear
        positive = all((ys[np.isfinite(ys)] > 0).all() for ys in series.values())
        ax.set_yscale("log" if positive else "linear")
        _label(ax, "loss" if ax is axes[0, 0] else "term logs")
    return _save(fig, path)


def plot_fid(evals: list[dict[str, Any]], path: str | Path) -> Path | None:
    """FID against step, one line per number of sampling steps, from records ``{step, fid_1step, ...}``."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = sorted({k for e in evals for k in e if k.startswith("fid_")})
    if not keys:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    for k in keys:
        pts = [(e["step"], e[k]) for e in evals if k in e]
        ax.plot(*zip(*pts), marker="o", label=k)
    _label(ax, "FID")
    return _save(fig, path)


def _label(ax: Any, ylabel: str) -> None:
    """Axis labels, legend and grid of a curve-vs-step panel."""
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.legend()
    ax.grid(alpha=0.3)


def _save(fig: Any, path: str | Path) -> Path:
    """Write a figure as PNG and free it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)
