#!/usr/bin/env bash
# The GPU check of issue #15, for a machine with a CUDA GPU (this project's device tool lends one to some
# sessions; CI never has one and nothing depends on it). It uses the machine's own python3 with torch, jax and
# optax installed, and dynopt from this checkout; it fits in 10 minutes on one H200 (two timed parts):
#   1. tests/test_devices.py on CUDA: every torch drop-in, every execution path (reference, flat, fused=True,
#      whose kernels inductor emits in Triton there), float32 and bfloat16, parameters and state against
#      torch.optim on the same device;
#   2. benchmarks/device_step_time.py: the step-time table on CUDA against torch.optim foreach and fused.
# Results go to $OUT (the device tool's folder) or results/gpu/; record them in benchmarks/README.md.
#   bash benchmarks/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-results/gpu}"
mkdir -p "$out"
py="${PYTHON:-python3}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 MPLBACKEND=Agg
{
  date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || echo "nvidia-smi: not found"
  "$py" -c "import sys, torch, jax, optax; print(sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, \
'jax', jax.__version__, 'optax', optax.__version__, 'devices', torch.cuda.device_count())"
} 2>&1 | tee "$out/machine.txt"
status=0
DYNOPT_TEST_DEVICE=cuda timeout 330 "$py" -m pytest -q -p no:cacheprovider -n "${GPU_CHECK_WORKERS:-8}" \
  tests/test_devices.py 2>&1 | tee "$out/tests.txt" || status=1
timeout 210 "$py" benchmarks/device_step_time.py --device cuda 2>&1 | tee "$out/step_time_float32.txt" || status=1
exit $status
