#!/usr/bin/env bash
# The whole GPU check in one command, for the GPU machine (one H100; torch, triton, transformers and torchvision
# preinstalled; no deepspeed, no network). From any directory:
#
#     OUT=/some/dir benchmarks/gpu_check.sh [--dry-run] [--budget-s 540] [--python python3]
#
# Steps, each under its own time cap in seconds (scaled down with a smaller --budget-s, and never past what is left):
#   install   110  carried wheels ($WHEELS, default .whl/) into /tmp/site (the image lacks omegaconf), then
#                  `setup.py build_ext --inplace`: the C++/CUDA extension vlbert_fast._C next to its sources
#                  (TORCH_CUDA_ARCH_LIST=9.0: one architecture). Nothing is pip-installed: every step imports the
#                  package from this checkout (PYTHONPATH), Triton kernels included (vlbert_fast.kernels is an
#                  ordinary subpackage), so a failed or timed-out build costs only the native backend (ops fall
#                  back to Triton; VLBERT_FAST_NO_JIT=1 keeps later steps from JIT-building it instead);
#   gpu-tests 100  `pytest -m gpu` with TRITON_INTERPRET=0 (tests/conftest.py turns the interpreter on otherwise)
#                  and VLBERT_FAST_AUTOTUNE=first: each attention kernel compiles the first of its autotune configs
#                  only (correctness does not need the race; the benchmarks keep the full lists);
#   kernels   100  \  `python -m benchmarks.run SUITE --no-report --rep-ms 50`, each with --time-budget-s 20 s
#   step       80   > under its cap, so a suite stops starting new points in time and keeps what it measured (the
#   peers     100  /  points it had no time for are listed in bench.log). Each measurement is warmed up once
#                     before it is timed (JIT compilation and autotuning stay out of the figures: harness.py);
#   report     20  report.md and plots from every row of the run.
# The caps add up to 510 s, leaving 30 s for packing: within 9 minutes. Under $OUT: gpu_check.log (this account),
# install.log, pytest_gpu.log, bench.log, report.md and results.tar.gz (CSVs, report.md, plots/: unpack it into
# benchmarks/results/ to commit). Exit status 1 when a step failed, timed out or was skipped for lack of time.
# --dry-run prints the plan, every command with its cap, and runs nothing.
#
# The wheel, fetched once where the package index is reachable (omegaconf 2.4 needs only PyYAML, which the image
# has; with omegaconf 2.3 carry antlr4-python3-runtime 4.9.3 too, built by `pip wheel`), in the repository root:
#     echo /.whl/ >> .git/info/exclude
#     python3 -m pip download --no-deps --only-binary=:all: -d .whl omegaconf==2.4.0
# and the device call carries .whl.
set -uo pipefail

BUDGET=540
DRY=0
PY=python3
usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }
while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) DRY=1 ;;
        --budget-s)
            BUDGET=${2:-}
            shift
            if ! [[ "$BUDGET" =~ ^[0-9]+$ ]]; then
                echo "gpu_check.sh: --budget-s expects whole seconds, found '$BUDGET'" >&2
                exit 2
            fi
            ;;
        --python)
            PY=${2:-}
            shift
            [ -n "$PY" ] || { echo "gpu_check.sh: --python expects an interpreter" >&2; exit 2; }
            ;;
        -h | --help) usage; exit 0 ;;
        *) echo "gpu_check.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
    esac
    shift
done
if [ -z "${OUT:-}" ]; then
    echo "gpu_check.sh: set OUT to the folder that receives the logs and results" >&2
    exit 2
fi
cd "$(dirname "$0")/.." || exit 2 # the repository root
WHEELS=${WHEELS:-.whl}
RESULTS=${RESULTS:-/tmp/vlbert_fast_gpu_results}
RESERVE=30 # seconds kept for packing the results after the last step
START=$SECONDS
STATUS=0
PLANNED=0 # the caps of the steps that run, added up
export PYTHONUNBUFFERED=1 TRITON_INTERPRET=0

if [ "$DRY" = 0 ]; then mkdir -p "$OUT"; fi
say() {
    echo "[gpu_check $((SECONDS - START))s] $*"
    if [ "$DRY" = 0 ]; then echo "[gpu_check $((SECONDS - START))s] $*" >>"$OUT/gpu_check.log"; fi
}

cap() { # a step's cap now: the default scaled by budget / 540 when the budget is smaller, at most what is left
    local limit=$1 left=$((BUDGET - (SECONDS - START) - RESERVE))
    if [ "$BUDGET" -lt 540 ]; then limit=$((limit * BUDGET / 540)); fi
    if [ "$limit" -gt "$left" ]; then limit=$left; fi
    echo "$limit"
}

step() { # step NAME CAP LOG COMMAND...: runs COMMAND under the cap (or what is left), appending to LOG
    local name=$1 limit=$2 log=$3
    shift 3
    if [ "$limit" -lt 10 ]; then
        say "$name: skipped, $((BUDGET - (SECONDS - START)))s left of the ${BUDGET}s budget"
        STATUS=1
        return
    fi
    say "$name (cap ${limit}s): $*"
    PLANNED=$((PLANNED + limit))
    if [ "$DRY" = 1 ]; then return; fi
    local begin=$SECONDS
    timeout --signal=INT --kill-after=10 "$limit" "$@" >>"$OUT/$log" 2>&1
    local rc=$?
    if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then say "$name: TIMED OUT after $((SECONDS - begin))s"; fi
    say "$name: exit $rc after $((SECONDS - begin))s"
    if [ $rc -ne 0 ]; then STATUS=1; fi
}

install() { # the carried wheels, then the extension built in place (the package itself is imported from here)
    if compgen -G "$WHEELS/*.whl" >/dev/null; then
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
            "$WHEELS"/*.whl || return 1
    fi
    "$PY" -c "import vlbert_fast.kernels.attention, vlbert_fast.ops" || {
        echo "the package does not import from the checkout (PYTHONPATH=$PYTHONPATH): carry the wheels"
        return 1
    }
    TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} MAX_JOBS=${MAX_JOBS:-16} \
        "$PY" setup.py -q build_ext --inplace || return 1
    "$PY" -c "import torch, vlbert_fast._C as c; print('vlbert_fast._C with CUDA:', c.with_cuda())" || return 1
}
export -f install
export PY WHEELS

export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} VLBERT_FAST_NO_JIT=1 # the package from this checkout
if compgen -G "$WHEELS/*.whl" >/dev/null; then
    export PYTHONPATH=/tmp/site:$PYTHONPATH
    say "carried wheels: $(cd "$WHEELS" && echo *.whl)"
else
    say "no carried wheels in $WHEELS (the GPU image lacks omegaconf: the package will not import without them)"
fi
if [ "$DRY" = 0 ]; then
    rm -rf "$RESULTS" && mkdir -p "$RESULTS"
    { nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 || true
      "$PY" -c "import sys, torch, triton; print(sys.version.split()[0], torch.__version__, triton.__version__)" 2>&1
    } | while read -r line; do say "$line"; done
fi

say "install: carried wheels into /tmp/site, then setup.py build_ext --inplace (no pip install of the package)"
step install "$(cap 110)" install.log bash -c install
step gpu-tests "$(cap 100)" pytest_gpu.log env VLBERT_FAST_AUTOTUNE=first "$PY" -m pytest -q -m gpu \
    -p no:cacheprovider --continue-on-collection-errors tests
for suite in kernels:100 step:80 peers:100; do
    name=${suite%%:*}
    limit=$(cap "${suite##*:}")
    step "$name" "$limit" bench.log "$PY" -m benchmarks.run "$name" --out "$RESULTS" --no-report --rep-ms 50 \
        --time-budget-s $((limit > 40 ? limit - 20 : limit / 2))
done
step report "$(cap 20)" bench.log "$PY" -m benchmarks.run report --out "$RESULTS"

if [ "$DRY" = 0 ]; then
    if [ -f "$RESULTS/report.md" ]; then cp "$RESULTS/report.md" "$OUT/report.md"; fi
    tar czf "$OUT/results.tar.gz" -C "$RESULTS" . || STATUS=1
fi
say "plan: caps ${PLANNED}s + ${RESERVE}s for packing = $((PLANNED + RESERVE))s of the ${BUDGET}s budget"
say "done in $((SECONDS - START))s, status $STATUS"
exit $STATUS
