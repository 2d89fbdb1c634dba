"""`contraseg predict`: the command's inputs (NAME=FILE pairs, a case folder, a dataset) to the
Predictor."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from contraseg.data.labels import get_convention
from contraseg.data.layouts import discover
from contraseg.engine.infer import Predictor
from contraseg.errors import ConfigError, ContrasegError, InputError


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


def run_predict(run: Path, out: Path, *, inputs: list[str], named: dict[str, Path | None],
                data: Path | None, resample_to: str | None, which: str, device: str,
                overrides: dict, console: Console, labels: str | None = None
                ) -> tuple[Path, str]:
    """Segment one case (files or a case folder) into `out`, or a dataset into folder `out`;
    returns what was written and which checkpoint (file and step) made it.

    Labels are written with the raw values of `labels`, else of the case folder's or dataset's
    own convention (when it has the run's classes), else of the run's.
    """
    predictor = Predictor.from_run(run, which, device)
    predictor.override(overrides)
    if data is not None:
        if inputs or any(named.values()):
            raise ConfigError("--data (batch mode) takes no other inputs")
        failures = predictor.predict_folder(data, out, resample_to=resample_to, labels=labels)
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
        return predictor.predict_case(spec.cases[0], out, resample_to=resample_to,
                                      convention=predictor.output_convention(spec.convention)
                                      ), predictor.source
    convention = predictor.output_convention(get_convention(labels)) if labels else None
    return predictor.predict_files(_named_inputs(inputs, named), out, resample_to=resample_to,
                                   convention=convention), predictor.source
