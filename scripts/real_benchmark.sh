#!/usr/bin/env bash
# The real-scan benchmark of the README ("Results on real scans"): each method's `cpu` preset is
# trained on the 16 training cases of the fixed BraTS 2018 split
# (scripts/real_benchmark/brats2018_split.json) and evaluated on its 5 test cases over the 15
# modality subsets with the fixed protocol: the last checkpoint (`--which last`), Dice and HD95
# with and without the ET post-processing. Then `contraseg compare` tests, per case on the
# 15-subset mean, each method against the U-Net and DC-Seg against RFNet (when both are there).
# Resumable: a method whose report exists is skipped, a stopped training resumes (--resume).
# Usage: scripts/real_benchmark.sh OUT [METHODS...]     (default METHODS: unet)
# The data: $CONTRASEG_SHARED_DATA/real/brats2018, else ../shared/data beside the checkout.
# About an hour per method on 2 CPU cores (each `cpu` preset fits its schedule to 55 minutes).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:?usage: $0 OUT [METHODS...]}; shift
methods=${*:-unet}
shared=${CONTRASEG_SHARED_DATA:-$here/../../shared/data}
python "$here/real_benchmark/make_manifests.py" "$shared/real/brats2018" "$out/data"
for method in $methods; do
  run="$out/$method/run" report="$out/$method/report"
  if [ -f "$report/metrics.csv" ]; then
    echo "$method: done ($report), skipped"; continue
  fi
  if [ -f "$run/checkpoints/last.pt" ]; then
    status=$(python -c "import json,sys; print(json.load(open(sys.argv[1]))['status'])" \
      "$run/run.json")
    [ "$status" = finished ] || contraseg train --out "$run" --resume
  else
    contraseg train --method "$method" --preset cpu --data "$out/data/train" --out "$run"
  fi
  contraseg evaluate --run "$run" --data "$out/data/test" --out "$report" --which last \
    --overlays 1
done
compare() {  # A B: B - A on every subset and on the 15-subset mean
  [ -f "$out/$1/report/metrics.csv" ] && [ -f "$out/$2/report/metrics.csv" ] || return 0
  contraseg compare "$out/$1/report" "$out/$2/report" --json > "$out/compare-$2-vs-$1.json"
  contraseg compare "$out/$1/report" "$out/$2/report"
}
for method in rfnet dc-seg dcl-manet clfc swin-moco; do compare unet "$method"; done
compare rfnet dc-seg
