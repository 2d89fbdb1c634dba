"""`contraseg predict`: the command's inputs (NAME=FILE pairs, a case folder, a dataset) to the
Predictor."""

from __future__ import annotations

import os
from contextlib import nullcontext
from pathlib import Path

from rich.console import Console

from contraseg.data.labels import get_convention
from contraseg.data.layouts import (
    MODALITY_SYNONYMS,
    NIFTI_SUFFIXES,
    canonical_modality,
    discover,
    strip_nifti_suffix,
    without_modality_token,
)
from contraseg.engine.case_segmenter import CaseSegmenter
from contraseg.engine.predictor import Predictor
from contraseg.errors import ConfigError, ContrasegError, InputError
from contraseg.utils.text import did_you_mean


def _named_inputs(inputs: list[str], named: dict[str, Path | None]) -> dict[str, Path]:
    files = {name: path for name, path in named.items() if path is not None}
    for item in inputs:
        name, sep, path = item.partition("=")
        if not sep:
            raise ConfigError(f"'{item}': give inputs as NAME=FILE (t1c=a.nii.gz) or one case "
                              "folder")
        if name in files:
            raise ConfigError(f"modality '{name}' given twice")
        files[name] = Path(path)
    return files


SEPARATORS = "-_."


def _means_folder(out: Path, raw: str) -> bool:
    return out.is_dir() or raw.endswith(("/", os.sep))


def case_output(out: Path, case_id: str, raw: str | None = None) -> Path:
    """Where one case's label map goes: `out` itself when it names a .nii.gz / .nii file,
    `<out>/<case_id>.nii.gz` when it is a folder (existing, or written with a trailing slash);
    anything else is refused before any work is done."""
    raw = str(out) if raw is None else raw
    if _means_folder(out, raw):
        return out / f"{case_id}.nii.gz"
    if out.exists() and not out.is_file():
        raise InputError(out, "exists and is not a file or a folder")
    if not out.name.endswith(NIFTI_SUFFIXES):
        raise InputError(out, "the output must be a .nii.gz or .nii file, or a folder (give it "
                              "with a trailing '/')")
    _check_parent(out)
    return out


def batch_output(out: Path) -> Path:
    """The folder of batch mode (`--data`): one `<case>.nii.gz` per case."""
    if out.name.endswith(NIFTI_SUFFIXES) or out.is_file():
        raise InputError(out, "batch mode (--data) writes one <case>.nii.gz per case: give a "
                              "folder, not a file")
    _check_parent(out)
    return out


def _check_parent(out: Path) -> None:
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise InputError(parent, "is a file, not a folder: cannot write below it")
            return


def case_id_from_files(files: list[Path]) -> str:
    """A case name for NAME=FILE inputs: the files' common name prefix (`BraTS-001-t1c`,
    `BraTS-001-t2f`: `BraTS-001`); one file: its name without a trailing modality token."""
    stems = [strip_nifti_suffix(path.name) for path in files]
    prefix = os.path.commonprefix(stems) if len(stems) > 1 else ""
    if any(len(stem) > len(prefix) and stem[len(prefix)] not in SEPARATORS for stem in stems):
        prefix = prefix[: max(prefix.rfind(c) for c in SEPARATORS) + 1]  # whole tokens only
    if len(stems) == 1:
        prefix = "" if stems[0].lower() in MODALITY_SYNONYMS else without_modality_token(stems[0])
    return prefix.rstrip("-_. ") or "prediction"


def run_predict(run: Path, out: Path | str, *, inputs: list[str],
                named: dict[str, Path | None], data: Path | None, resample_to: str | None,
                which: str, device: str, overrides: dict, console: Console,
                labels: str | None = None, save_probabilities: bool = False,
                modalities: str | None = None) -> tuple[Path, str]:
    """Segment one case (files or a case folder) into `out`, or a dataset into folder `out`;
    returns what was written and what made it (the modalities used, for one case, and the
    checkpoint file and step).

    Labels are written with the raw values of `labels`, else of the case folder's or dataset's
    own convention (when it has the run's classes), else of the run's. `out` is checked
    before the run is loaded (`case_output`, `batch_output`): a trailing slash means a folder.
    """
    raw, out = str(out), Path(out)
    files_given = any("=" in item for item in inputs) or any(named.values())
    if modalities is not None and files_given:
        raise ConfigError("--modalities chooses among a case folder's or dataset's images; "
                          "with NAME=FILE inputs give only the files to use")
    if data is not None:
        if inputs or any(named.values()):
            raise ConfigError("--data (batch mode) takes no other inputs")
        out = batch_output(out)
        predictor = Predictor.from_run(run, which, device, overrides=overrides)
        chosen = chosen_modalities(modalities, predictor)
        failures = predictor.predict_folder(data, out, resample_to=resample_to, labels=labels,
                                            save_probabilities=save_probabilities,
                                            modalities=chosen)
        for failure in failures:
            console.print(f"[red]failed:[/] {failure.message}", highlight=False)
        if failures:
            raise ContrasegError(f"{len(failures)} case(s) failed; the others are in {out}")
        return out, predictor.source
    if len(inputs) == 1 and "=" not in inputs[0] and not any(named.values()):
        folder = Path(inputs[0])
        if not folder.is_dir():
            raise InputError(folder, "not a case folder (or give NAME=FILE pairs)")
        spec = discover(folder, labels=labels)
        if len(spec.cases) != 1:
            raise InputError(folder, f"holds {len(spec.cases)} cases; use --data for batch mode")
        case = spec.cases[0]
        out = case_output(out, case.case_id, raw)
        predictor = Predictor.from_run(run, which, device, overrides=overrides)
        chosen = chosen_modalities(modalities, predictor) or predictor.modalities
        used = [m for m in predictor.modalities if m in case.images and m in chosen]
        with _working(console, case.case_id, used, predictor):
            written = predictor.predict_case(
                case, out, resample_to=resample_to,
                convention=predictor.output_convention(spec.convention),
                save_probabilities=save_probabilities, modalities=chosen)
        return written, _from(used, predictor)
    files = _named_inputs(inputs, named)
    case_id = case_id_from_files(list(files.values()))
    out = case_output(out, case_id, raw)
    predictor = Predictor.from_run(run, which, device, overrides=overrides)
    convention = predictor.output_convention(get_convention(labels)) if labels else None
    given = {canonical_modality(name) for name in files}
    used = [m for m in predictor.modalities if m in given]
    with _working(console, case_id, used, predictor):
        written = predictor.predict_files(files, out, resample_to=resample_to,
                                          convention=convention,
                                          save_probabilities=save_probabilities)
    return written, _from(used, predictor)


def _from(used: list[str], predictor: CaseSegmenter) -> str:
    """'t1c, flair and run/checkpoints/last.pt (step 2)': what made a prediction."""
    return f"{', '.join(used) or 'no known modality'} and {predictor.source}"


def _working(console: Console, case_id: str, used: list[str], predictor: CaseSegmenter):
    """A spinner on a terminal, one line elsewhere, while one case is segmented."""
    flips = " with 8 flips" if predictor.infer.tta_flips else ""
    text = f"segmenting {case_id} from {', '.join(used)}{flips}"
    if console.is_terminal:
        return console.status(text)
    console.print(text, highlight=False, markup=False)
    return nullcontext()


def chosen_modalities(spelled: str | None, predictor: CaseSegmenter) -> tuple[str, ...] | None:
    """--modalities flair,t1c as the run's canonical names (None: every one a case has)."""
    if spelled is None:
        return None
    chosen = []
    for name in (part.strip() for part in spelled.split(",") if part.strip()):
        modality = canonical_modality(name)
        if modality not in predictor.modalities:
            raise ConfigError(f"--modalities: '{name}' is not one of the run's "
                              f"{', '.join(predictor.modalities)}"
                              + did_you_mean(name, predictor.modalities))
        chosen.append(modality)
    if not chosen:
        raise ConfigError("--modalities is empty (give names like flair,t1c)")
    return tuple(chosen)
