#!/usr/bin/env bash
# Choose between settings without touching the test cases: train METHOD's `cpu` preset with
# the given overrides on 12 of the 16 training cases (OUT/data/fit) and score it on the other 4
# (OUT/data/val, "inner_validation" in brats2018_split.json) over the 15 subsets. Run two
# candidates side by side with OMP_NUM_THREADS=1 each, so both see the same machine load.
# Resumable like the benchmark (a stopped run resumes, a scored one is skipped).
# Usage: scripts/real_benchmark/try_setting.sh OUT NAME METHOD [--set KEY=VALUE ...]
#   e.g. OMP_NUM_THREADS=1 scripts/real_benchmark/try_setting.sh runs/real regions unet \
#          --set budget_minutes=25 --set 'model.regions=[[1,2,3],[1,3],[3]]'
# Result: OUT/try/NAME/report (metrics.csv, summary.md).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:?usage: $0 OUT NAME METHOD [--set KEY=VALUE ...]}
name=${2:?usage: $0 OUT NAME METHOD [--set KEY=VALUE ...]}
method=${3:?usage: $0 OUT NAME METHOD [--set KEY=VALUE ...]}
shift 3
shared=${CONTRASEG_SHARED_DATA:-$here/../../../shared/data}
python "$here/make_manifests.py" "$shared" "$out/data"
. "$here/stages.sh"  # finished, stage
dir="$out/try/$name"
[ -f "$dir/report/metrics.csv" ] && { echo "$name: scored already ($dir/report)"; exit 0; }
stage train "$dir/run" --method "$method" --data "$out/data/fit" "$@"
contraseg evaluate --run "$dir/run" --data "$out/data/val" --out "$dir/report" --which last \
  --overlays 0
