#!/usr/bin/env bash
# The phantom comparison of the README (DC-Seg vs the baselines): every method trains on the
# same phantoms (the demo's, seed 0) with the same budget (600 steps of batch 2 at 32^3) and
# its own fast-preset optimiser, for each training seed; each run is evaluated over the 15
# modality subsets on the demo's 4 held-out phantoms (set EXTRA_TEST=1 to also evaluate on 12
# more, seed 20000: about 4 minutes per run on 2 CPU cores).
# Usage: scripts/phantom_comparison.sh OUT [SEEDS...]   (about 20 minutes per seed on 2 CPU cores)
set -euo pipefail
out=${1:?usage: $0 OUT [SEEDS...]}; shift
seeds=${*:-0 1 2}
budget=(--set epochs=15 --set iters_per_epoch=40 --set 'data.patch_size=[32,32,32]')
extra=${EXTRA_TEST:-0}
if [ "$extra" = 1 ]; then
  contraseg data phantom --out "$out/test12" --cases 12 --size 64 --seed 20000
fi
evaluate_extra() {
  [ "$extra" = 1 ] || return 0
  contraseg evaluate --run "$1/run" --data "$out/test12" --out "$1/report12" --overlays 0
}
for seed in $seeds; do
  for method in unet rfnet dc-seg; do
    run="$out/$method-seed$seed"
    contraseg demo --method "$method" --out "$run" --set seed="$seed" "${budget[@]}"
    evaluate_extra "$run"
  done
done
# the ablation of the contrastive terms, first seed
run="$out/dc-seg-no-contrastive-seed${seeds%% *}"
contraseg demo --method dc-seg --out "$run" --set seed="${seeds%% *}" "${budget[@]}" \
  --set loss_weights.ana=0 --set loss_weights.mod=0
evaluate_extra "$run"
python "$(dirname "$0")/phantom_comparison.py" "$out" report
if [ "$extra" = 1 ]; then python "$(dirname "$0")/phantom_comparison.py" "$out" report12; fi
