#!/usr/bin/env bash
# The phantom comparison of the README (the methods vs the baselines): every method trains on the
# same phantoms (the demo's, seed 0) with the same budget (600 steps of batch 2 at 32^3) and
# its own fast-preset optimiser, for each training seed; each run is evaluated over the 15
# modality subsets on the demo's 4 held-out phantoms (set EXTRA_TEST=1 to also evaluate on 12
# more, seed 20000: about 4 minutes per run on 2 CPU cores).
# DCL-MANet's ablations (no DCL, no RFB, neither) and DC-Seg's (no contrastive terms, no
# reconstruction) run for every seed. METHODS="dcl-manet" runs a subset of the methods (and their ablations).
# Usage: scripts/phantom_comparison.sh OUT [SEEDS...]   (about 35 minutes per seed on 2 CPU cores)
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
methods=${METHODS:-unet rfnet dc-seg dcl-manet}
train() {  # NAME SEED METHOD [--set ...]
  local run="$out/$1-seed$2" seed=$2 method=$3; shift 3
  contraseg demo --method "$method" --out "$run" --set seed="$seed" "${budget[@]}" "$@"
  evaluate_extra "$run"
}
no_dcl=(--set loss_weights.dcl_specific=0 --set loss_weights.dcl_common=0)
no_rfb=(--set model.rfb=false)
no_contrastive=(--set loss_weights.ana=0 --set loss_weights.mod=0)
for seed in $seeds; do
  for method in $methods; do
    train "$method" "$seed" "$method"
  done
  if [[ " $methods " == *" dcl-manet "* ]]; then
    train dcl-manet-no-dcl "$seed" dcl-manet "${no_dcl[@]}"
    train dcl-manet-no-rfb "$seed" dcl-manet "${no_rfb[@]}"
    train dcl-manet-neither "$seed" dcl-manet "${no_dcl[@]}" "${no_rfb[@]}"
  fi
  if [[ " $methods " == *" dc-seg "* ]]; then  # which of DC-Seg's own terms helps
    train dc-seg-no-contrastive "$seed" dc-seg "${no_contrastive[@]}"
    train dc-seg-no-rec "$seed" dc-seg --set loss_weights.rec=0
  fi
done
for reference in dc-seg dcl-manet; do
  python "$(dirname "$0")/phantom_comparison.py" "$out" report "$reference"
  if [ "$extra" = 1 ]; then python "$(dirname "$0")/phantom_comparison.py" "$out" report12 "$reference"; fi
done
