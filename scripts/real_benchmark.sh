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
# The reference (METHODS `plain`): the plain MONAI recipe (scripts/plain_monai_unet.py, 25
# minutes, one thread) on the same 16 cases, scored on the 5 test cases with all four
# modalities. Every segmentation stage keeps its weights every 5 minutes (keep_every_minutes),
# and scripts/real_benchmark/learning_curve.py scores them: the minimum useful budget of each
# method (the first minute, and its step, at which its mean WT/TC/ET Dice reaches the plain
# recipe's), in OUT/METHOD/curve.json and OUT/METHOD/curve.md.
#
# Every stage runs with $THREADS threads (default 1, as the plain reference): on the 2-core
# development machine two invocations run side by side, each method on one core, e.g.
#   scripts/real_benchmark.sh OUT plain unet dc-seg clfc &
#   sleep 60; scripts/real_benchmark.sh OUT rfnet dcl-manet swin-moco
# then `scripts/real_benchmark.sh OUT` once more (everything done is skipped) for the learning
# curves, comparisons and summary of all of them.
#
# Resumable: a method whose report exists is skipped, a stopped stage resumes (--resume).
# Usage: [THREADS=N] scripts/real_benchmark.sh OUT [METHODS...]
#   (METHODS: plain (the reference) and any of unet rfnet dc-seg dcl-manet clfc swin-moco;
#   default: all of them; about 1 h 15 min a method: 55 minutes of training, preprocessing,
#   the 15-subset evaluation)
# The data: $CONTRASEG_SHARED_DATA, else ../shared/data beside the checkout.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:?usage: $0 OUT [METHODS...]}; shift
methods=${*:-plain unet rfnet dc-seg dcl-manet clfc swin-moco}
export OMP_NUM_THREADS=${THREADS:-1} MKL_NUM_THREADS=${THREADS:-1}
shared=${CONTRASEG_SHARED_DATA:-$here/../../shared/data}
python "$here/real_benchmark/make_manifests.py" "$shared" "$out/data"
curve_every=5  # minutes between the kept weights of a segmentation stage

if [[ " $methods " == *" plain "* && ! -f "$out/plain/report/metrics.csv" ]]; then
  python "$here/plain_monai_unet.py" --data "$shared/real/brats2018" \
    --split "$here/real_benchmark/brats2018_split.json" --out "$out/plain/run" --minutes 25 \
    --cache "$out/plain/cache" --resume
  contraseg evaluate --pred "$out/plain/run/pred" --data "$out/data/test" \
    --out "$out/plain/report" --overlays 0
fi

. "$here/real_benchmark/stages.sh"  # finished, stage

train() {  # METHOD RUN
  local method=$1 run=$2 dir=$out/$1
  case $method in
    clfc)
      stage train "$dir/introvae" --method introvae --data "$out/data/normal" \
        --data "$out/data/train"
      stage train "$run" --method clfc --data "$out/data/train" \
        --set "normal_run=$dir/introvae" --set keep_every_minutes=$curve_every ;;
    swin-moco)
      stage pretrain "$dir/pretrain" --method swin-moco --data "$out/data/train" \
        --data "$shared/real/brats2023-unlabeled" --data "$shared/real/tcga-gbm-pseudolabel"
      stage train "$run" --method swin-moco --data "$out/data/train" --init "$dir/pretrain" \
        --set keep_every_minutes=$curve_every ;;
    *)
      stage train "$run" --method "$method" --data "$out/data/train" \
        --set keep_every_minutes=$curve_every ;;
  esac
}

for method in $methods; do
  [ "$method" = plain ] && continue
  run="$out/$method/run" report="$out/$method/report"
  if [ -f "$report/metrics.csv" ]; then
    echo "$method: done ($report), skipped"; continue
  fi
  train "$method" "$run"
  contraseg evaluate --run "$run" --data "$out/data/test" --out "$report" --which last \
    --overlays 1
done
for method in $methods; do  # the learning curves (each point is scored once)
  run="$out/$method/run"
  [ "$method" != plain ] && [ -d "$run/checkpoints" ] || continue
  if [ ! -f "$out/plain/report/metrics.csv" ]; then
    echo "$method: its learning curve waits for the reference (run with METHODS plain)"; continue
  fi
  python "$here/real_benchmark/learning_curve.py" "$run" "$out/data/test" "$out/plain/report" \
    --json "$out/$method/curve.json" > "$out/$method/curve.md"
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
