#!/usr/bin/env bash
# The GPU check (issue 17): run it whenever a CUDA machine is at hand and put its figures in
# the README. It runs the test suite with CUDA visible, then the CPU-vs-GPU agreement and
# throughput, then the geometry (GPU) and train-step (CPU) benchmarks. Without a CUDA device it
# says so and stops (exit 0).
#
#   bash benchmarks/gpu_check.sh            # from the repository root, alignctl installed
set -euo pipefail
cd "$(dirname "$0")/.."
if ! python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "no CUDA device: the GPU check needs one"
    exit 0
fi
python -c "import torch; print('torch', torch.__version__, 'on', torch.cuda.get_device_name(0))"
echo "== test suite (CUDA visible) =="
python -m pytest -q -p no:cacheprovider -x
echo "== CPU vs GPU agreement and throughput =="
python benchmarks/gpu_agreement.py
echo "== geometry benchmark on the GPU =="
python benchmarks/geometry.py --device cuda
echo "== large-C benchmark =="
if [ -f benchmarks/large_c.py ]; then python benchmarks/large_c.py; fi
echo "== train step benchmark (CPU: it has no device option yet) =="
python benchmarks/train_step.py --reps 10
