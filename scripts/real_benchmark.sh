#!/usr/bin/env bash
# The real-scan benchmark of the README ("Results on real scans"): each method's `cpu` preset is
# trained on the 16 training cases of the fixed BraTS 2018 split
# (scripts/real_benchmark/brats2018_split.json) and evaluated on its 5 test cases over the 15
# modality subsets with the fixed protocol: the last checkpoint (`--which last`), Dice and HD95
# with and without the ET post-processing. Then `contraseg compare` tests, per case on the
# 15-subset mean, each method against the U-Net and DC-Seg against RFNet (when both are there),
# and scripts/real_benchmark/summarise.py writes OUT/summary.md (the README's tables).
#
# Two methods have a first stage, inside their hour:
# - clfc: its normal-appearance network (introvae, cpu preset, 15 min) learns from the healthy
#   IXI subject (../shared/data/normal/ixi002, T1) and the tumour-free axial slices of the 16
#   training cases' T1; the segmenter (40 min) is pointed at it.
# - swin-moco: MoCo v3 pre-training (20 min) on every training scan without its labels, plus
#   the unlabelled real scans (brats2023-unlabeled, tcga-gbm-pseudolabel; the test cases are
#   left out), then fine-tuning (35 min) from that encoder. No ImageNet weights: nothing is
#   downloaded.
#
# Resumable: a method whose report exists is skipped, a stopped stage resumes (--resume).
# Usage: scripts/real_benchmark.sh OUT [METHODS...]
#   (default METHODS: unet rfnet dc-seg dcl-manet clfc swin-moco; about 1 h 15 min each on
#   2 CPU cores: 55 minutes of training, preprocessing, the 15-subset evaluation)
# The data: $CONTRASEG_SHARED_DATA, else ../shared/data beside the checkout.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:?usage: $0 OUT [METHODS...]}; shift
methods=${*:-unet rfnet dc-seg dcl-manet clfc swin-moco}
shared=${CONTRASEG_SHARED_DATA:-$here/../../shared/data}
python "$here/real_benchmark/make_manifests.py" "$shared" "$out/data"

. "$here/real_benchmark/stages.sh"  # finished, stage

train() {  # METHOD RUN
  local method=$1 run=$2 dir=$out/$1
  case $method in
    clfc)
      stage train "$dir/introvae" --method introvae --data "$out/data/normal" \
        --data "$out/data/train"
      stage train "$run" --method clfc --data "$out/data/train" \
        --set "normal_run=$dir/introvae" ;;
    swin-moco)
      stage pretrain "$dir/pretrain" --method swin-moco --data "$out/data/train" \
        --data "$shared/real/brats2023-unlabeled" --data "$shared/real/tcga-gbm-pseudolabel"
      stage train "$run" --method swin-moco --data "$out/data/train" --init "$dir/pretrain" ;;
    *)
      stage train "$run" --method "$method" --data "$out/data/train" ;;
  esac
}

for method in $methods; do
  run="$out/$method/run" report="$out/$method/report"
  if [ -f "$report/metrics.csv" ]; then
    echo "$method: done ($report), skipped"; continue
  fi
  train "$method" "$run"
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
python "$here/real_benchmark/summarise.py" "$out" > "$out/summary.md"
echo "wrote $out/summary.md"
