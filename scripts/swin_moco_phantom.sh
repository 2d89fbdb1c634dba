#!/usr/bin/env bash
# Swin-MoCo on a phantom: MoCo v3 pre-training on the slices of 12 phantoms (labels unused),
# then the Swin-Unet fine-tuned with 25% of the labels (3 of the 12 phantoms) from the
# pre-trained encoder vs from scratch, same budget and seeds; both evaluated on TEST_CASES
# held-out phantoms (default 12, seed 10000) with every modality and over every subset.
# Then `python scripts/swin_moco_summary.py OUT` tests the difference with the cases as the
# paired units (12 cases: a p-value is possible; the earlier 4 gave none).
# ANATOMY=brain (default: 64^3 phantoms, 15 subsets, HD95 in voxels) or parotid (STIR, T1,
# T2; SIZE in-plane voxels over 192 mm, default 128: 1.5 x 1.5 x 4 mm; 7 subsets; HD95 in mm).
# Usage: [ANATOMY=parotid] [PRETRAIN_SETS="--set epochs=50"] [TEST_CASES=12] \
#        scripts/swin_moco_phantom.sh OUT [SEEDS...]
# (fast presets; PRETRAIN_SETS: extra options of the pre-training run)
set -euo pipefail
out=${1:?usage: $0 OUT [SEEDS...]}; shift
seeds=${*:-0 1 2}
anatomy=${ANATOMY:-brain}
case $anatomy in
  brain) phantom=(--size 64); units=(); labelled=3 ;;
  parotid) phantom=(--anatomy parotid --size "${SIZE:-128}"); units=(--units mm); labelled=3 ;;
  *) echo "error: ANATOMY must be brain or parotid (got $anatomy)" >&2; exit 2 ;;
esac
[ -d "$out/train" ] || contraseg data phantom --out "$out/train" --cases 12 --seed 0 "${phantom[@]}"
[ -d "$out/test" ] || contraseg data phantom --out "$out/test" --cases "${TEST_CASES:-12}" \
  --seed 10000 "${phantom[@]}"
if [ ! -d "$out/labelled25" ]; then
  mkdir -p "$out/labelled25.tmp"
  if [ "$anatomy" = parotid ]; then  # a manifest naming the first cases of the training one
    python - "$out/train" "$out/labelled25.tmp" "$labelled" <<'PY'
import json, sys
from pathlib import Path
train, dest, n = Path(sys.argv[1]).resolve(), Path(sys.argv[2]), int(sys.argv[3])
manifest = json.loads((train / "contraseg.json").read_text())
manifest.update(root=str(train), cases=manifest["cases"][:n])
(dest / "contraseg.json").write_text(json.dumps(manifest, indent=1) + "\n")
PY
  else
    for case in $(ls "$out/train" | grep Phantom | head -"$labelled"); do
      ln -s "$(cd "$out/train/$case" && pwd)" "$out/labelled25.tmp/$case"
    done
  fi
  mv "$out/labelled25.tmp" "$out/labelled25"
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
      contraseg evaluate --run "$run" --data "$out/test" --out "$run/report" --overlays 0 \
        "${units[@]}"
  done
done
