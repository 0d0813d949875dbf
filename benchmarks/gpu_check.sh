#!/usr/bin/env bash
# The one short script for a lent GPU (issue 6): fused vs unfused trial throughput, bare and
# through the engine, and a 512-trial study against one trial alone. Prints its figures.
# Run from the repository root: bash benchmarks/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, torch.cuda.get_device_name(0))"
echo "== bare loops, random data, no engine (fused_bare.py)"
timeout 60 python benchmarks/fused_bare.py --device cuda --sizes 32,512 --seconds 1
echo "== one group, in-process: no-op trials vs a real worker and workspace (fused_overhead.py)"
timeout 120 python benchmarks/fused_overhead.py --device cuda --k 512 --rounds 5 2>&1 | grep -v " INFO "
timeout 60 python benchmarks/fused_overhead.py --device cuda --k 32 --rounds 3 2>&1 | grep -v " INFO "
echo "== four groups back to back: a worker records a group's end while it trains the next"
timeout 150 python benchmarks/fused_overhead.py --device cuda --k 512 --groups 4 --rounds 3 --serial 2>&1 | grep -v " INFO "
echo "== through the engine (fused_engine.py --gpu)"
timeout 420 python benchmarks/fused_engine.py --gpu
