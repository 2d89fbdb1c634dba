#!/usr/bin/env bash
# Swin-MoCo on the phantom: MoCo v3 pre-training on the slices of 12 phantoms (labels unused),
# then the Swin-Unet fine-tuned with 25% of the labels (3 of the 12 phantoms) from the
# pre-trained encoder vs from scratch, same budget and seeds; both evaluated on TEST_CASES
# held-out phantoms (default 12, seed 10000) with every modality and over the 15 subsets.
# Then `python scripts/swin_moco_summary.py OUT` tests the difference with the cases as the
# paired units (12 cases: a p-value is possible; the earlier 4 gave none).
# Usage: [PRETRAIN_SETS="--set epochs=50"] [TEST_CASES=12] scripts/swin_moco_phantom.sh OUT [SEEDS...]
# (fast presets; PRETRAIN_SETS: extra options of the pre-training run)
set -euo pipefail
out=${1:?usage: $0 OUT [SEEDS...]}; shift
seeds=${*:-0 1 2}
[ -d "$out/train" ] || contraseg data phantom --out "$out/train" --cases 12 --size 64 --seed 0
[ -d "$out/test" ] ||
  contraseg data phantom --out "$out/test" --cases "${TEST_CASES:-12}" --size 64 --seed 10000
if [ ! -d "$out/labelled25" ]; then
  mkdir -p "$out/labelled25"
  for case in $(ls "$out/train" | grep Phantom | head -3); do
    ln -s "$(cd "$out/train/$case" && pwd)" "$out/labelled25/$case"
  done
fi
[ -f "$out/moco/checkpoints/last.pt" ] ||
  contraseg pretrain --method swin-moco --data "$out/train" --out "$out/moco" ${PRETRAIN_SETS:-}
for seed in $seeds; do
  for variant in pretrained scratch; do
    run="$out/$variant-seed$seed"
    init=(); [ "$variant" = pretrained ] && init=(--init "$out/moco")
    [ -f "$run/checkpoints/last.pt" ] ||
      contraseg train --method swin-moco --data "$out/labelled25" --out "$run" \
        --set seed="$seed" --set data.val_fraction=0 "${init[@]}"
    [ -f "$run/report/metrics.csv" ] ||
      contraseg evaluate --run "$run" --data "$out/test" --out "$run/report" --overlays 0
  done
done
