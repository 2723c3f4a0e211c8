#!/usr/bin/env bash
# The GPU checks in one run: the `gpu`-marked tests, `bench_train.py gpu` (train loop with the CPU
# and the device feed against a bare loop, PGD-5 fine-tuning, crafting precision) and
# `bench_evaluate.py gpu` (the standard attack sweep's faces/s per attack).
#   bash benchmarks/gpu_checks.sh [OUTDIR]
#   EVAL_FACES=900 bash benchmarks/gpu_checks.sh out   # a shorter evaluate run (default 4500)
# Needs fakeproof importable (installed, or PYTHONPATH=.) and a CUDA device; each part has its own
# time limit so that one failing part still leaves the others' output.
set -uo pipefail
out=${1:-.}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 | tee "$out/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())" | tee -a "$out/gpu.txt"
nproc | sed 's/^/cpu cores: /' | tee -a "$out/gpu.txt"
timeout 200 python3 -m pytest -m gpu -rs -v -p no:cacheprovider \
    tests/test_resume_ddp.py tests/test_parallel_preprocess.py tests/test_device_feed.py \
    2>&1 | tee "$out/gpu_tests.log"
timeout "${TRAIN_LIMIT:-300}" python3 benchmarks/bench_train.py gpu 2>&1 | tee "$out/bench_train_gpu.log"
timeout "${EVAL_LIMIT:-1900}" python3 benchmarks/bench_evaluate.py gpu --faces "${EVAL_FACES:-4500}" \
    2>&1 | tee "$out/bench_evaluate_gpu.log"
