"""Section 1: spectral layers (neuraloperator's, ours) against 3x3 / 1x1 convolutions of the same width.

For each (width W, modes m, resolution R, batch B) and precision: forward and forward+backward time,
activation memory saved for backward, CUDA peak memory, and achieved FLOP/s as a fraction of the same
run's matrix-product rate. FLOPs are counted analytically (per forward; forward+backward = 3x):

* spectral: FFTs 2.5 N log2 N per real transform of N = R^2 points, B (C_in + C_out) of them, plus the
  complex contraction 8 B C_in C_out m1 (m2//2 + 1);
* k x k convolution: 2 B C_in C_out k^2 R^2.
"""

from __future__ import annotations

import math
from typing import Any
from collections.abc import Callable

import torch
from torch import Tensor, nn

from ctcm_backbones.spectral import NeuralopSpectralConv2d, SpectralConv2d, weight_from_neuralop

from .settings import Settings
from .timing import measure, peak_memory_mb, precision_context, saved_tensor_bytes

LAYERS = ("neuralop", "ctcm", "ctcm-fft", "ctcm-einsum", "conv3x3", "conv1x1")


class EinsumSpectralConv2d(SpectralConv2d):
    """ctcm's layer as it was before this benchmark: one ``einsum`` and an in-place scatter (reference).

    (The weight layout has since become mode-major; the einsum reads it as such.)"""

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        xf = torch.fft.rfft2(x, norm="forward")
        rows = torch.cat([xf[..., : self.n_pos, : self.n_half], xf[..., h - self.n_neg :, : self.n_half]], dim=-2)
        y = torch.einsum("bixy,xyio->boxy", rows, self.complex_weight())
        out = y.new_zeros(x.shape[0], self.out_channels, h, w // 2 + 1)
        out[..., : self.n_pos, : self.n_half] = y[..., : self.n_pos, :]
        out[..., h - self.n_neg :, : self.n_half] = y[..., self.n_pos :, :]
        return torch.fft.irfft2(out, s=(h, w), norm="forward")


def layer_flops(kind: str, width: int, modes: int, res: int, batch: int) -> float:
    """Forward FLOPs of one layer (see the module docstring)."""
    if kind.startswith("conv"):
        k = 3 if kind == "conv3x3" else 1
        return 2.0 * batch * width * width * k * k * res * res
    n = res * res
    fft = 2.5 * n * math.log2(n) * batch * 2 * width
    return fft + 8.0 * batch * width * width * modes * (modes // 2 + 1)


def build_layers(width: int, modes: int, device: torch.device) -> dict[str, nn.Module]:
    """The six layers, the spectral ones sharing one set of weights (ours mapped from neuraloperator's):
    ``ctcm`` is our layer as configured by default (``transform="auto"``), ``ctcm-fft`` forces its FFT path."""
    nl = NeuralopSpectralConv2d(width, width, modes)
    ours, fft = SpectralConv2d(width, width, modes), SpectralConv2d(width, width, modes, transform="fft")
    einsum = EinsumSpectralConv2d(width, width, modes)
    with torch.no_grad():
        mapped = weight_from_neuralop(nl.conv.weight.tensor.detach())
        for layer in (ours, fft, einsum):
            layer.weight.copy_(mapped)
    layers = {"neuralop": nl, "ctcm": ours, "ctcm-fft": fft, "ctcm-einsum": einsum,
              "conv3x3": nn.Conv2d(width, width, 3, padding=1, bias=False),
              "conv1x1": nn.Conv2d(width, width, 1, bias=False)}
    return {k: v.to(device) for k, v in layers.items()}


def _usable(fns: dict[str, Callable[[], object]], errors: dict[str, str]) -> dict[str, Callable[[], object]]:
    """Run each function once; drop (and record) those that raise, e.g. an FFT without bf16 support."""
    ok = {}
    for name, fn in fns.items():
        try:
            fn()
            ok[name] = fn
        except Exception as exc:  # recorded in the results, not hidden
            errors[name] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
    return ok


def bench_config(width: int, modes: int, res: int, batch: int, precision: str, settings: Settings,
                 device: torch.device, matmul_rate: float) -> list[dict[str, Any]]:
    """All layers at one size: one row per layer."""
    torch.manual_seed(0)
    layers = build_layers(width, modes, device)
    x = torch.randn(batch, width, res, res, device=device, requires_grad=True)
    grad_out = torch.randn(batch, width, res, res, device=device)
    ctx = lambda: precision_context(device, precision)

    def fwd(layer: nn.Module) -> Callable[[], object]:
        def run() -> object:
            with torch.no_grad(), ctx():
                return layer(x)
        return run

    def fwd_bwd(layer: nn.Module) -> Callable[[], object]:
        def run() -> None:
            with ctx():
                y = layer(x)
            y.backward(grad_out.to(y.dtype))
        return run

    errors: dict[str, str] = {}
    f_fns = _usable({k: fwd(m) for k, m in layers.items()}, errors)
    b_fns = _usable({k: fwd_bwd(m) for k, m in layers.items() if k in f_fns}, errors)
    timing = dict(device=device, warmup=max(0, settings.warmup - 1), repeats=settings.repeats, clock=settings.clock)
    t_fwd, t_bwd = measure(f_fns, **timing), measure(b_fns, **timing)  # the _usable call was one warm-up

    with torch.no_grad():
        ref = layers["neuralop"](x) if precision == "fp32" else None
        diffs = ({k: float((layers[k](x) - ref).abs().max()) for k in ("ctcm", "ctcm-fft", "ctcm-einsum")}
                 if ref is not None else {})

    rows = []
    for name, layer in layers.items():
        row: dict[str, Any] = {"width": width, "modes": modes, "res": res, "batch": batch, "precision": precision,
                               "layer": name, "error": errors.get(name)}
        if name in t_fwd:
            flops = layer_flops(name, width, modes, res, batch)
            row.update(fwd_s=t_fwd[name]["median_s"], fwd_min_s=t_fwd[name]["min_s"], flops=flops,
                       fwd_flops_per_s=flops / t_fwd[name]["median_s"],
                       fwd_frac_matmul=flops / t_fwd[name]["median_s"] / matmul_rate)
        if name in t_bwd:
            row.update(fwd_bwd_s=t_bwd[name]["median_s"], fwd_bwd_min_s=t_bwd[name]["min_s"],
                       fwd_bwd_flops_per_s=3 * row["flops"] / t_bwd[name]["median_s"],
                       fwd_bwd_frac_matmul=3 * row["flops"] / t_bwd[name]["median_s"] / matmul_rate)
            with saved_tensor_bytes() as saved, ctx():
                layer(x)
            row["saved_mb"] = saved[0] / 2**20
            row["peak_mb"] = peak_memory_mb(b_fns[name], device)
        if name in diffs:
            row["max_abs_diff_vs_neuralop"] = diffs[name]
        rows.append(row)
    return rows


def run_fft_layers(settings: Settings, device: torch.device, matmul: dict[str, dict[str, float]],
                   log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Section 1 over ``settings.fft_configs`` x ``settings.precisions``."""
    rows: list[dict[str, Any]] = []
    for precision in settings.precisions:
        for width, modes, res, batch in settings.fft_configs:
            log(f"[fft] {precision} width={width} modes={modes} res={res} batch={batch}")
            rows += bench_config(width, modes, res, batch, precision, settings, device,
                                 matmul[precision]["flops_per_s"])
    return rows
