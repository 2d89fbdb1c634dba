#!/usr/bin/env bash
# CLFC and the paper's ablations on the phantom with five-fold patient-wise cross-validation:
# the full model, Baseline-1 (no normal appearance network: model.normal_network=false) and
# Baseline-2 (no SimSiam: loss_weights.simsiam=0), each trained with the fast preset on the
# same folds of 20 phantoms (64^3, seed 20000), every case scored by the fold that held it out
# (all 15 modality subsets), then paired Wilcoxon tests (`contraseg compare`).
# VAE_RUN: an introvae run trained on OTHER phantoms' normal brains, e.g. the one of
# `python scripts/introvae_phantom.py OUT` (seed 0), so no test brain was seen by the generator.
# Usage: scripts/clfc_cv.sh OUT VAE_RUN [--set key=value ...]   (extra settings for every run)
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
run full
run baseline1 --set model.normal_network=false
run baseline2 --set loss_weights.simsiam=0
for name in baseline1 baseline2; do
  contraseg compare "$out/report-$name" "$out/report-full" --json > "$out/compare-full-vs-$name.json"
done
python "$(dirname "$0")/clfc_cv_summary.py" "$out"
