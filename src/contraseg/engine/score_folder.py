"""`contraseg evaluate --pred DIR`: predictions made by any tool (nnU-Net, a MONAI script,
another contraseg run) scored with the protocol, tables and report of `contraseg evaluate`, so
`contraseg compare` can test them against a run's report.

Each labelled case `<case>` of the dataset needs `DIR/<case>.nii.gz` (or `.nii`) on the grid
of its reference label, in the dataset's label values (or `pred_labels`'). A prediction has no
modality subset of its own: its rows carry the dataset's full subset, the row a contraseg
report compares it with. The small-ET rule is applied for the *_postproc columns as in
`evaluate` (it is idempotent, so predictions already post-processed score the same there).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from rich.console import Console

from contraseg.data.cases import CaseSpec
from contraseg.data.io import grid_difference, load_case, read_label
from contraseg.data.labels import get_convention
from contraseg.data.layouts import NIFTI_SUFFIXES, order_modalities
from contraseg.engine.et_rule import et_rule_threshold, has_enhancing_class
from contraseg.engine.evaluate import (
    PEERS_ET_MIN_VOXELS,
    canonical_labels,
    et_rule_note,
    labelled_cases,
    overlay_picture,
    score_prediction,
)
from contraseg.errors import InputError
from contraseg.evaluation.metrics import MetricSettings
from contraseg.evaluation.protocol import subset_name
from contraseg.evaluation.report import write_report
from contraseg.utils.progress import progress_bar


def prediction_files(pred_dir: Path, cases: list[CaseSpec]) -> dict[str, Path]:
    """{case id: its prediction}; every case must have one (a partial folder would be scored
    as if it were complete)."""
    if not pred_dir.is_dir():
        raise InputError(pred_dir, "no such folder of predictions")
    found = {}
    for case in cases:
        path = next((p for s in NIFTI_SUFFIXES if (p := pred_dir / f"{case.case_id}{s}")
                     .is_file()), None)
        if path is not None:
            found[case.case_id] = path
    missing = [c.case_id for c in cases if c.case_id not in found]
    if missing:
        shown = ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "")
        raise InputError(pred_dir, f"no prediction for {len(missing)} of {len(cases)} labelled "
                                   f"cases ({shown}): expected <case>.nii.gz")
    return found


def evaluate_predictions(pred_dir: Path, data: Path, out: Path, *, labels: str | None = None,
                         pred_labels: str | None = None, units: str = "voxel",
                         hd95: str = "brats", et_min_voxels: int | None = None,
                         overlays: int = 2, console: Console | None = None) -> Path:
    """Score `pred_dir` against every labelled case of `data`; returns the report's HTML."""
    spec, cases = labelled_cases(data, labels)
    files = prediction_files(Path(pred_dir), cases)
    convention = spec.convention
    written_in = get_convention(pred_labels) if pred_labels else convention
    if tuple(written_in.class_names) != tuple(convention.class_names):
        raise InputError(pred_dir, f"--pred-labels {written_in.name} has other classes than the "
                                   f"dataset's {convention.name}")
    et_min = PEERS_ET_MIN_VOXELS if et_min_voxels is None else et_min_voxels
    # the canonical order a run's report names its subsets in, so the two reports pair up
    full = subset_name(order_modalities(spec.modalities))
    # pictures are drawn aside and copied by write_report: a failure leaves no report folder
    with tempfile.TemporaryDirectory(prefix=".contraseg-pictures-") as scratch:
        pictures_dir = Path(scratch)
        rows, overlay_paths = [], []
        with progress_bar(console=console) as bar:
            task = bar.add_task("evaluate", total=len(cases))
            for case in cases:
                reference_volume = read_label(case.label)
                reference = canonical_labels(reference_volume.data, convention, case.label)
                volume = read_label(files[case.case_id])
                if difference := grid_difference(volume, reference_volume):
                    raise InputError(files[case.case_id], f"is not on the grid of its reference "
                                                          f"{case.label.name}: {difference}")
                pred = canonical_labels(volume.data, written_in, files[case.case_id])
                spacing = reference_volume.zooms
                threshold = (et_rule_threshold(et_min, reference.shape, spacing)
                             if has_enhancing_class(convention) else 0)
                rows += score_prediction(case.case_id, full, pred, reference, convention,
                                         MetricSettings(units, hd95, "brats", spacing), threshold)
                if len(overlay_paths) < overlays and not case.missing:
                    loaded = load_case(case, with_label=False)
                    pictures = {"images": dict(zip(loaded.modalities, loaded.image, strict=True)),
                                "affine": loaded.affine, "ref": reference,
                                "preds": {"external": pred}}
                    overlay_paths.append(overlay_picture(
                        pictures_dir, case.case_id, pictures, convention))
                bar.advance(task)
        settings = MetricSettings(units, hd95, "brats", (1.0, 1.0, 1.0)).to_dict()
        conventions = {**settings, "spacing": "per case, from its reference image"
                       if units == "mm" else None, "et_postprocessing": et_rule_note(et_min, rows)}
        notes = {"predictions": str(pred_dir), "data": str(data), "cases": str(len(cases)),
                 "subsets": f"{full} (one prediction a case, made outside contraseg)"}
        return write_report(out, rows, order_modalities(spec.modalities), conventions, notes,
                            overlay_paths,
                            title="contraseg evaluation of external predictions")
