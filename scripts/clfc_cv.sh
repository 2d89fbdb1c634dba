#!/usr/bin/env bash
# CLFC and the paper's ablations on the phantom with five-fold patient-wise cross-validation:
# the full model, Baseline-1 (no normal appearance network: model.normal_network=false) and
# Baseline-2 (no SimSiam: loss_weights.simsiam=0), each trained with the fast preset on the
# same folds of 20 phantoms (64^3, seed 20000), every case scored by the fold that held it out
# (all 15 modality subsets), then paired Wilcoxon tests (`contraseg compare`).
# VAE_RUN: an introvae run trained on OTHER phantoms' normal brains, e.g. the one of
# `python scripts/introvae_phantom.py OUT` (seed 0), so no test brain was seen by the generator.
# VARIANTS (default "full baseline1 baseline2") may add `gate`: the full model with its gates
# started open (model.gate_init=0.95, issue 16's test of CLFC's slow start).
# Usage: [VARIANTS="full gate"] scripts/clfc_cv.sh OUT VAE_RUN [--set key=value ...]
#   (extra settings for every run; about 13 minutes per variant on 2 CPU cores)
set -euo pipefail
out=${1:?usage: $0 OUT VAE_RUN [--set ...]}; vae=${2:?usage: $0 OUT VAE_RUN}; shift 2
[ -d "$out/data" ] || contraseg data phantom --out "$out/data" --cases 20 --size 64 --seed 20000
common=(--method clfc --preset fast --data "$out/data" --folds 5 --set "normal_run=$vae"
        --set "data.cache_dir=$out/cache" "$@")
run() {  # NAME [--set ...]
  local name=$1; shift
  contraseg train --out "$out/$name" "${common[@]}" "$@" --resume
  [ -f "$out/report-$name/metrics.csv" ] ||
    contraseg evaluate --run "$out/$name" --data "$out/data" --out "$out/report-$name" --overlays 0
}
variants=${VARIANTS:-full baseline1 baseline2}
declare -A settings=([full]="" [baseline1]="--set model.normal_network=false"
                     [baseline2]="--set loss_weights.simsiam=0" [gate]="--set model.gate_init=0.95")
for name in $variants; do
  [ -n "${settings[$name]+set}" ] || { echo "error: unknown variant '$name'" >&2; exit 1; }
  # shellcheck disable=SC2086  # the settings are words
  run "$name" ${settings[$name]}
done
for name in $variants; do
  [ "$name" = full ] || [ ! -f "$out/report-full/metrics.csv" ] ||
    contraseg compare "$out/report-$name" "$out/report-full" --json > "$out/compare-full-vs-$name.json"
done
python "$(dirname "$0")/clfc_cv_summary.py" "$out"
