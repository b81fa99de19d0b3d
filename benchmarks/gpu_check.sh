#!/usr/bin/env bash
# The GPU check (issue 17): run it whenever a CUDA machine is at hand and put its figures in
# the README. Without a CUDA device it says so and stops (exit 0). Each part runs under its own
# time limit and goes on after a failure (the exit status is the worst part's); every part's
# output is also written to $OUT (default gpu-check/) as one file per part:
#   env.txt        torch, CUDA and the device
#   agreement.txt  CPU vs GPU: every metric (float32, TF32 off) and throughput
#   e2e.txt        --device cuda through the CLI: analyze (vs CPU), train + resume, race
#   bench.txt      train-step ratios, many-class cost and memory, the monitor's overhead
#   geometry.txt   the geometry benchmark on the GPU
#   tests.txt      the test suite with CUDA visible (pytest-xdist when installed); junit.xml
#
#   bash benchmarks/gpu_check.sh            # from the repository root, alignctl importable
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-check}
if ! python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "no CUDA device: the GPU check needs one"
    exit 0
fi
mkdir -p "$OUT"  # only where there is something to write: no empty folder left behind
export PYTHONUNBUFFERED=1
status=0
part() {  # part NAME SECONDS COMMAND...: run it, tee its output, remember a failure
    local name=$1 secs=$2
    shift 2
    echo "== $name (limit ${secs} s) =="
    local t0=$SECONDS
    timeout -s INT -k 20 "$secs" "$@" 2>&1 | tee "$OUT/$name.txt"
    local rc=${PIPESTATUS[0]}
    echo "[$name: exit $rc, $((SECONDS - t0)) s]" | tee -a "$OUT/$name.txt"
    [ "$rc" -ne 0 ] && status=$rc
}
part env 60 python -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda,
'on', torch.cuda.get_device_name(0), f'{torch.cuda.mem_get_info()[1] / 2**30:.0f} GiB')"
part agreement "${AGREEMENT_S:-90}" python benchmarks/gpu_agreement.py
part e2e "${E2E_S:-150}" python benchmarks/gpu_e2e.py
part bench "${BENCH_S:-200}" python benchmarks/gpu_bench.py --reps 5
xdist=()
python -c "import xdist" 2>/dev/null && xdist=(-n "${WORKERS:-12}")
part tests "${TESTS_S:-300}" python -m pytest -q -p no:cacheprovider "${xdist[@]}" \
    --durations=15 --junitxml="$OUT/junit.xml" -o junit_family=xunit1
part geometry "${GEOMETRY_S:-90}" python benchmarks/geometry.py --device cuda --reps 3 --skip-memory
exit $status
