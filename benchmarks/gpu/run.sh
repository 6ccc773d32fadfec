#!/usr/bin/env bash
# Run ON THE GPU MACHINE (project root), in the last of the calls described in benchmarks/gpu/README.md.
#   benchmarks/gpu/run.sh quality [RECIPES]   issue 11: python -m benchmarks quality --size gpu
#                                            (default: the design's objective vs the winner, ect; two seeds)
#                                            COMPUTE_OF=R: equal compute with recipe R (issues 15, 17)
#   benchmarks/gpu/run.sh speed       issue 10: python -m benchmarks --gpu-check
# Results go to $OUT (at most 8 files come back).
# Dry run of this script on a CPU machine (benchmarks/gpu/README.md, "Dry run"): DEVICE=cpu DRY=1, which
# runs the speed check at --smoke sizes and prints the quality commands (--dry-run) instead of training.
set -euo pipefail
what=${1:?quality or speed}
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
DEVICE=${DEVICE:-cuda}
DRY=${DRY:-}
SITE=${SITE:-/tmp/site}
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl*/*.whl
export PYTHONPATH=$SITE:$PWD
python3 -m pip install -q --no-index --no-deps --no-build-isolation -e . > /dev/null  # entry points
if command -v nvidia-smi > /dev/null; then
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
fi
case "$what" in
  quality)
    cat .gpu/inception.part-* > /tmp/default_1.pt
    export CTCM_FID_WEIGHTS=/tmp/default_1.pt
    python3 -m benchmarks quality --size gpu --data .gpu/cifar10-train.zip --fd8-heldout 5000 \
        --recipes "${2:-default,ect}" --seeds 0,1 --out /tmp/quality --tag gpu --device "$DEVICE" ${DRY:+--dry-run} \
        ${COMPUTE_OF:+--compute-of "$COMPUTE_OF"} \
        2>&1 | tee "$OUT/quality.log"
    [ -n "$DRY" ] && exit 0
    cp /tmp/quality/quality-gpu-gpu.json /tmp/quality/quality-gpu-gpu.md /tmp/quality/quality-gpu-gpu.png "$OUT"/
    cp /tmp/quality/quality-gpu-gpu-samples-*.png /tmp/quality/costs-gpu.json "$OUT"/ 2>/dev/null || true
    ;;
  speed)
    python3 -m benchmarks --gpu-check --device "$DEVICE" ${DRY:+--smoke} --out "$OUT" 2>&1 | tee "$OUT/speed.log"
    ;;
  *) echo "unknown: $what (quality or speed)"; exit 2 ;;
esac
ls -l "$OUT"
