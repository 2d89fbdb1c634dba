#!/usr/bin/env bash
# GPU readiness: for every method, one bf16 training step (paper preset, channels-last-3d for the
# 3D methods, as the engine trains) and one 240x240x155 case inference (all modalities, and the
# 15 subsets in one pass) on CUDA: `contraseg bench` reports voxels/s and the peak CUDA memory
# (`train_cuda_max_allocated_mb`, ...) as JSON, one object per line, in OUT/gpu_check.jsonl.
# Usage: scripts/gpu_check.sh [OUT] [METHODS...]   (needs a CUDA build of torch and a GPU)
set -euo pipefail
out=${1:-gpu-check}; shift || true
methods=${*:-unet rfnet dc-seg dcl-manet clfc swin-moco}
python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else \
'gpu_check: torch sees no CUDA device (torch ' + torch.__version__ + ')')"
mkdir -p "$out"
: > "$out/gpu_check.jsonl"
for method in $methods; do
  echo "gpu_check: $method" >&2
  contraseg bench --method "$method" --device cuda --amp bf16 --preset paper --repeats 1 \
    --json >> "$out/gpu_check.jsonl"
done
echo "wrote $out/gpu_check.jsonl" >&2
