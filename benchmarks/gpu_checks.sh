#!/usr/bin/env bash
# The GPU checks of issue 7 in one run: the `gpu`-marked tests, then `bench_train.py gpu`.
#   bash benchmarks/gpu_checks.sh [OUTDIR]
# Needs fakeproof importable (installed, or PYTHONPATH=.) and a CUDA device; each part has its own
# time limit so that one failing part still leaves the other's output.
set -uo pipefail
out=${1:-.}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 | tee "$out/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())" | tee -a "$out/gpu.txt"
nproc | sed 's/^/cpu cores: /' | tee -a "$out/gpu.txt"
timeout 200 python3 -m pytest -m gpu -rs -v -p no:cacheprovider \
    tests/test_resume_ddp.py tests/test_parallel_preprocess.py 2>&1 | tee "$out/gpu_tests.log"
timeout 270 python3 benchmarks/bench_train.py gpu 2>&1 | tee "$out/bench_train_gpu.log"
