"""`contraseg evaluate`: a run over every modality subset of a labelled dataset.

For each case the image is preprocessed once and one sliding-window pass decodes all requested
subsets (per-modality encoders run once per window, not once per subset). Each subset's
prediction goes back to the input grid and is scored against the case's label for every region,
raw and after the BraTS small-ET rule. Rows go to REPORT/metrics.csv (case, subset, region,
metrics); the report (DC-Seg Table 1 layout, heatmap, overlays) is written beside it.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import torch
from rich.console import Console

from contraseg.data.cases import CaseSpec, DatasetSpec
from contraseg.data.io import load_case
from contraseg.data.labels import LabelConvention, is_whole_tumour, label_values
from contraseg.data.layouts import discover
from contraseg.data.preprocess import labels_from_probabilities, preprocess
from contraseg.engine.et_rule import BRATS_FIELD_OF_VIEW_MM, et_rule_threshold, postprocess_et
from contraseg.engine.folds import cross_validation_plan
from contraseg.engine.predictor import Predictor
from contraseg.engine.sliding_window import method_device, sliding_window_probabilities, window_size
from contraseg.errors import InputError
from contraseg.evaluation.metrics import MetricSettings, region_metrics
from contraseg.evaluation.multiclass import multiclass_metrics
from contraseg.evaluation.overlays import case_overlay
from contraseg.evaluation.protocol import availability, parse_subsets, subset_name
from contraseg.evaluation.report import write_report
from contraseg.evaluation.representations import (
    RepresentationSet,
    central_crop,
    representation_figure,
)
from contraseg.utils.progress import progress_bar

PEERS_ET_MIN_VOXELS = 500  # the post-processing RFNet, mmFormer and DC-Seg report ET with


def evaluate_case(predictor: Predictor, case: CaseSpec, convention: LabelConvention,
                  subsets: list[tuple[str, ...]], units: str, hd95: str,
                  et_min_voxels: int) -> tuple[list[dict], dict]:
    """Rows (subset x region) for one case, and pictures: the network input ("input": image
    and present channels on the preprocessed grid) and, when the case has every modality the
    run knows, the full-subset prediction ("images", "pred", "ref").

    A case lacking a modality (BraTS 2015: FLAIR and T1c only) is scored on the subsets it can
    provide; distances use the case's own spacing when `units` is mm. The *_postproc columns
    apply the small-ET rule with `et_min_voxels` voxels of a 1 mm grid, scaled to the case's
    grid (`et_rule_threshold`; column `et_rule_voxels`, 0 where the rule does not apply).
    """
    loaded = load_case(case.present_only())
    if loaded.label is None:
        raise InputError(case.case_id, "has no label to evaluate against")
    settings = MetricSettings(units, hd95, "brats", loaded.spacing)
    reference = canonical_labels(loaded.label, convention, case.label or case.case_id)
    if is_whole_tumour(predictor.convention):  # a whole-tumour-only run: one tumour class
        reference = (reference > 0).astype(np.uint8)
    pre = preprocess(loaded, predictor.settings_for(loaded))  # as predict: same grid rules
    image, present = predictor.channels(pre.image, pre.modalities)
    feasible = [s for s in subsets if set(s) <= set(pre.modalities)]
    rows_avail = torch.tensor([availability(s, predictor.modalities) for s in feasible])
    prob = sliding_window_probabilities(predictor.method, image, rows_avail, predictor.infer,
                                        predictor.roi_size, bf16=predictor.bf16)
    prob = prob.cpu().numpy()
    threshold = et_rule_threshold(et_min_voxels, loaded.shape, loaded.spacing,
                                  predictor.convention)
    rows, pictures = [], {"input": (image, present)}
    full = next((s for s in feasible if len(s) == len(pre.modalities)), None)
    shown = pictured_subsets(feasible, full) if full else []
    preds = {}
    for k, subset in enumerate(feasible):
        pred = labels_from_probabilities(prob[k], pre.record)
        rows += score_prediction(case.case_id, subset_name(subset), pred, reference,
                                 predictor.convention, settings, threshold)
        if subset in shown:
            preds[subset] = pred
    if full is not None:  # the full subset was evaluated: the picture shows it
        pictures |= {"images": dict(zip(pre.modalities, loaded.image, strict=True)),
                     "affine": loaded.affine, "ref": reference,
                     "preds": {subset_name(s): preds[s] for s in shown}}  # all modalities first
    return rows, pictures


def canonical_labels(raw: np.ndarray, convention: LabelConvention,
                     source: str | Path) -> np.ndarray:
    """A label map in canonical classes; values the convention does not know are one line
    naming `source` (with the convention they look like)."""
    if problem := convention.unknown_values_problem(label_values(raw)):
        raise InputError(source, problem)
    return convention.to_canonical(raw)


def score_prediction(case_id: str, subset: str, pred: np.ndarray, reference: np.ndarray,
                     convention: LabelConvention, settings: MetricSettings,
                     et_rule_voxels: int) -> list[dict]:
    """One row per region of one case's canonical prediction: the metrics, raw and after the
    small-ET rule (`et_rule_voxels` on this grid; 0: off), and mmseg's per-class means."""
    scores = region_metrics(pred, reference, convention, settings.distance_spacing,
                            settings.hd95_definition, settings.empty_policy)
    post = postprocess_et(pred, et_rule_voxels)
    post_scores = (scores if post is pred else region_metrics(
        post, reference, convention, settings.distance_spacing, settings.hd95_definition,
        settings.empty_policy))
    # mmseg's per-class means over ALL classes (background included), for this case
    classes = multiclass_metrics(pred, reference, convention.num_classes)
    return [{"case": case_id, "subset": subset, "region": region, **values,
             "dice_postproc": post_scores[region]["dice"],
             "hd95_postproc": post_scores[region]["hd95"],
             "case_miou": classes["miou"], "case_mpa": classes["mpa"],
             "et_rule_voxels": et_rule_voxels} for region, values in scores.items()]


def split_test_cases(split: str, cases: list[CaseSpec], data: Path) -> list[CaseSpec]:
    """The cases of the split's test part (every one must be in `data`, refused otherwise)."""
    from contraseg.data.splits import keyed_split, load_split

    chosen = load_split(split)
    test = set(keyed_split(chosen, [c.case_id for c in cases], data)["test"])
    return [c for c in cases if c.case_id in test]


def labelled_cases(data: Path, labels: str | None) -> tuple[DatasetSpec, list[CaseSpec]]:
    """The dataset and its labelled cases; refused without a label convention or a label."""
    spec = discover(data, labels=labels)
    if spec.convention is None:
        raise InputError(data, "label convention unknown; pass --labels")
    cases = [c for c in spec.cases if c.label is not None]
    if not cases:
        raise InputError(data, "no labelled case to evaluate")
    return spec, cases


def evaluate_run(run: Path, data: Path, out: Path, *, subsets: str = "all", which: str = "auto",
                 device: str = "auto", labels: str | None = None, units: str = "voxel",
                 hd95: str = "brats", overlays: int = 2, figures: bool = False,
                 console: Console | None = None, infer: dict | None = None,
                 split: str | None = None) -> Path:
    """Evaluate `run` on every labelled case of `data` (with `split`, a published split
    NAME[:k] or a split file: only its test cases); returns the report's HTML path.

    A cross-validation folder (`contraseg train --folds`) is evaluated fold by fold: each case
    of `data` is scored by the fold that held it out (its run.json's split["test"]), so the
    report covers every case once, as the papers' five-fold protocol. Only finished folds are
    scored; the report names the others and the cases left unscored (`cross_validation_plan`).
    `which`: auto (best when the run validated, else last), best or last; `infer` overrides the
    run's inference settings (overlap, tta_flips, et_min_voxels, blend, blend_space). The
    report records the checkpoint (file and step) and the inference settings used.
    figures: also draw the PCA of the method's disentangled representations (DC-Seg's
    Figure 3) from the central training-sized crop of every case, when the method has them.
    """
    spec, cases = labelled_cases(data, labels)
    if split is not None:
        cases = split_test_cases(split, cases, data)
    cv = cross_validation_plan(Path(run), spec.root.name, cases)
    if cv.incomplete and console is not None:
        console.print(f"[yellow]incomplete cross-validation:[/] {cv.incomplete}", highlight=False)
    plan = cv.plan
    if not any(fold_cases for _, fold_cases in plan):
        raise InputError(data, f"holds none of the cases held out by the folds of {run}")

    def load(fold_run: Path) -> Predictor:
        return Predictor.from_run(fold_run, which, device, overrides=infer)

    predictor = load(plan[0][0])
    chosen = parse_subsets(subsets, predictor.modalities)
    settings = MetricSettings(units, hd95, "brats", (1.0, 1.0, 1.0))  # spacing: per case
    et_min = postprocessing_threshold((infer or {}).get("et_min_voxels"), predictor)
    # pictures are drawn aside and copied by write_report: a failure leaves no report folder
    with tempfile.TemporaryDirectory(prefix=".contraseg-pictures-") as scratch:
        pictures_dir = Path(scratch)
        rows, overlay_paths, sources = [], [], []
        reps = RepresentationSet(predictor.modalities) if figures else None
        with progress_bar(console=console) as bar:
            task = bar.add_task("evaluate", total=sum(len(c) for _, c in plan))
            for index, (fold_run, fold_cases) in enumerate(plan):
                if index:
                    predictor = load(fold_run)
                sources.append(predictor.source)
                for case in fold_cases:
                    case_rows, pictures = evaluate_case(predictor, case, spec.convention, chosen,
                                                        units, hd95, et_min)
                    rows += case_rows
                    if reps is not None and not _add_representations(
                            reps, predictor, case.case_id, *pictures["input"]):
                        reps = _no_representations(predictor, console)
                    if "preds" in pictures and len(overlay_paths) < overlays:
                        overlay_paths.append(overlay_picture(
                            pictures_dir, case.case_id, pictures, predictor.convention))
                    bar.advance(task)
        cases = [c for _, fold_cases in plan for c in fold_cases]
        conventions = {**settings.to_dict(), "spacing": "per case, from its reference image"
                       if units == "mm" else None,
                       "et_postprocessing": et_rule_note(et_min, rows),
                       "inference": inference_settings(predictor),
                       "case_miou_mpa": "per case and subset, mmsegmentation's mean IoU and mean "
                                        "per-class accuracy (MPA) over every class, background "
                                        "included, on the input grid (the same value on each "
                                        "region's row)"}
        notes = {"method": predictor.method_name, "checkpoint": ", ".join(sources),
                 **run_facts(plan[0][0]), "data": str(data), "cases": str(len(cases)),
                 "subsets": ", ".join(subset_name(s) for s in chosen),
                 **({"split": split} if split else {})}
        if cv.incomplete:
            notes["cross-validation"] = cv.incomplete
        curves = _run_folder(plan[0][0]) / "progress.png"  # one run's curves (not folds')
        extra = [curves] if len(plan) == 1 and curves.is_file() else []
        extra += [] if reps is None else [representation_figure(
            reps, pictures_dir / "figures" / "representations.png",
            f"{predictor.method_name}: PCA of the representations of {len(cases)} cases")]
        return write_report(out, rows, predictor.modalities, conventions, notes, overlay_paths,
                            figures=extra)


def _run_folder(run: Path) -> Path:
    """The run folder of a run folder or of one of its checkpoints (RUN/checkpoints/x.pt)."""
    run = Path(run)
    return run.parent.parent if run.is_file() else run


def run_facts(run: Path) -> dict[str, str]:
    """What the report says of the training run: preset, steps, time, cases, versions."""
    info_path = _run_folder(run) / "run.json"
    if not info_path.is_file():
        return {}
    info = json.loads(info_path.read_text())
    split = info.get("split") or {}
    facts = {"preset": str(info.get("config", {}).get("preset", "?")),
             "training": f"{info.get('status', '?')} at step {info.get('step', '?')}"}
    if (seconds := info.get("train_seconds")) is not None:
        facts["training"] += f" in {float(seconds) / 60:.0f} min"
    if info.get("amp"):
        facts["training"] += f", autocast {info['amp']}"
    facts["training cases"] = ", ".join(f"{len(ids)} {part}" for part, ids in split.items())
    if versions := info.get("versions"):
        facts["versions"] = ", ".join(f"{k} {v}" for k, v in versions.items())
    return facts


def inference_settings(predictor: Predictor) -> dict:
    """What the report states about how the predictions were made."""
    cfg = predictor.infer
    return {"window": list(window_size(predictor.method, predictor.roi_size)),
            "overlap": cfg.overlap, "blend": cfg.blend, "blend_space": cfg.blend_space,
            "tta_flips": cfg.tta_flips, "sw_batch_size": cfg.sw_batch_size,
            "bf16": predictor.bf16}


def postprocessing_threshold(asked: int | None, predictor: Predictor) -> int:
    """The ET rule of the *_postproc columns: what --et-min-voxels asked (0: off), else the
    run's own rule, else the peers' 500 (the raw columns never have it)."""
    if asked is not None:
        return int(asked)
    return predictor.infer.et_min_voxels or PEERS_ET_MIN_VOXELS


def et_rule_note(et_min: int, rows: list[dict]) -> str:
    if et_min == 0:
        return "columns *_postproc: the ET rule is off (--et-min-voxels 0); they equal the raw ones"
    thresholds = {row["case"]: int(row["et_rule_voxels"]) for row in rows}
    off = sorted(case for case, t in thresholds.items() if t == 0)
    used = sorted({t for t in thresholds.values() if t > 0})
    note = (f"columns *_postproc: predicted ET under {et_min} mm^3 ({et_min} voxels of a 1 mm "
            "grid, scaled to each case's voxel size: " +
            (", ".join(map(str, used)) + " voxels" if used else "no case") +
            ") becomes necrosis; cells it changed are marked † with the number of cases")
    if off:
        note += (f"; not applied to {len(off)} of {len(thresholds)} cases (field of view under "
                 f"{BRATS_FIELD_OF_VIEW_MM:g} mm on some axis, or not the brain-tumour classes: "
                 "the rule is BraTS's, for whole-head scans)")
    return note


def _add_representations(reps: RepresentationSet, predictor: Predictor, case_id: str,
                         image: torch.Tensor, present: torch.Tensor) -> bool:
    """image (1, M, *S), present (1, M): the case's central training-sized crop. False when
    the method has no representations to draw."""
    device = method_device(predictor.method)
    crop = central_crop(image[0], window_size(predictor.method, predictor.roi_size))[None]
    found = predictor.method.representations(crop.to(device), present.to(device))
    if found is None:
        return False
    reps.add(case_id, found, present[0])
    return True


def _no_representations(predictor: Predictor, console: Console | None) -> None:
    if console is not None:
        console.print(f"--figures: {predictor.method_name} has no disentangled "
                      "representations to draw; skipped")
    return None


def overlay_picture(out: Path, case_id: str, pictures: dict, convention: LabelConvention) -> Path:
    """out/overlays/<case>.png: the modalities, the reference and each prediction."""
    return case_overlay(pictures["images"], pictures["affine"], pictures["ref"],
                        pictures["preds"], convention.class_names,
                        out / "overlays" / f"{case_id}.png", title=case_id)


def pictured_subsets(feasible: list[tuple[str, ...]], full: tuple[str, ...]
                     ) -> list[tuple[str, ...]]:
    """The subsets an overlay shows: all modalities and one missing-modality case (FLAIR
    alone when it was evaluated, else the first single modality, else the smallest subset)."""
    others = sorted((s for s in feasible if s != full), key=len)
    single = next((s for s in others if s == ("flair",)), others[0] if others else None)
    return [s for s in (full, single) if s is not None and s in feasible]
