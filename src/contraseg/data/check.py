"""`contraseg data check`: read every file of a dataset; report what is there and what is wrong."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from rich import box
from rich.console import Console
from rich.table import Table

from contraseg.data.cases import CaseSpec, DatasetSpec
from contraseg.data.io import Volume, grid_difference, read_image, read_label
from contraseg.data.labels import LabelConvention, label_values
from contraseg.errors import InputError


@dataclass
class CaseReport:
    """What one case holds, and each problem as a one-line message starting with a path."""

    case_id: str
    images: dict[str, dict] = field(default_factory=dict)  # modality -> shape/spacing/...
    label_values: list[int] | None = None
    problems: list[str] = field(default_factory=list)


@dataclass
class CheckReport:
    root: str
    layout: str
    modalities: tuple[str, ...]
    convention: str | None
    notes: list[str]
    cases: list[CaseReport]

    @property
    def problems(self) -> list[str]:
        return [p for case in self.cases for p in case.problems]

    def to_dict(self) -> dict:
        return {**asdict(self), "problems": self.problems}


def check_dataset(
    spec: DatasetSpec,
    *,
    resample_to: str | None = None,
    atol: float = 1e-3,
    progress: Callable[[int], None] | None = None,
) -> CheckReport:
    """Read every image, label and brain mask of `spec` and collect the problems."""
    if resample_to is not None and resample_to not in spec.modalities:
        raise InputError(spec.root, f"--resample-to {resample_to}: the dataset's modalities are "
                                    f"{', '.join(spec.modalities)}")
    cases = []
    for i, case in enumerate(spec.cases):
        cases.append(check_case(case, spec.convention, resample_to=resample_to, atol=atol))
        if progress:
            progress(i + 1)
    convention = spec.convention.name if spec.convention else None
    return CheckReport(str(spec.root), spec.layout, spec.modalities, convention, spec.notes, cases)


def check_case(
    case: CaseSpec,
    convention: LabelConvention | None,
    *,
    resample_to: str | None = None,
    atol: float = 1e-3,
) -> CaseReport:
    """Read one case completely; every problem found becomes one line of the report."""
    report = CaseReport(case.case_id)
    report.problems += [f"{path}: missing {m} image for case {case.case_id}"
                        for m, path in case.missing.items()]
    volumes = {m: v for m, ref in case.images.items() if (v := _read(read_image, ref, report))}
    for modality, volume in volumes.items():
        report.images[modality] = _describe(volume)
    reference = volumes.get(resample_to) if resample_to else next(iter(volumes.values()), None)
    if reference is None:
        return report
    others = [v for m, v in volumes.items() if v is not reference]
    if resample_to is None:  # with --resample-to, modalities on other grids are fine
        _check_grids(others, reference, atol, report)
    resampled = resample_to is not None
    # brain masks are thresholded at 0.5 when used (some store 0.99999997), so read as images
    if case.brain_mask and (mask := _read(read_image, case.brain_mask, report)) is not None:
        _check_grids([mask], reference, atol, report, resampled)
    if case.label and (label := _read(read_label, case.label, report)) is not None:
        _check_grids([label], reference, atol, report, resampled)
        _check_label(label, convention, report)
    return report


def _read(reader: Callable, ref, report: CaseReport) -> Volume | None:
    try:
        return reader(ref)
    except InputError as exc:
        report.problems.append(str(exc))
        return None


def _describe(volume: Volume) -> dict:
    import nibabel as nib

    return {
        "file": volume.source,
        "shape": list(volume.shape),
        "spacing": [round(z, 4) for z in volume.zooms],
        "orientation": "".join(nib.aff2axcodes(volume.affine)),
    }


def _check_grids(volumes: list[Volume], reference: Volume, atol: float, report: CaseReport,
                 resampled: bool = False) -> None:
    for volume in volumes:
        problem = grid_difference(volume, reference, atol)
        if problem and not resampled:
            report.problems.append(f"{volume.source}: {problem}")


def _check_label(volume: Volume, convention: LabelConvention | None, report: CaseReport) -> None:
    values = [int(v) for v in label_values(volume.data)]
    report.label_values = values
    if values == [0] or not values:
        report.problems.append(f"{volume.path}: label map is empty (no foreground voxel)")
    if convention is None:
        return
    problem = convention.unknown_values_problem(values)
    if problem:
        report.problems.append(f"{volume.path}: {problem}")


def _grid(info: dict) -> str:
    spacing = "x".join(f"{z:.3g}" for z in info["spacing"])
    return f"{'x'.join(map(str, info['shape']))} {spacing}mm {info['orientation']}"


def print_report(report: CheckReport, console: Console) -> None:
    """A table of the cases, then the notes and every problem, one per line."""
    console.print(f"[bold]{report.root}[/]: {report.layout} layout, {len(report.cases)} cases, "
                  f"modalities {', '.join(report.modalities)}, "
                  f"labels {report.convention or 'unknown'}", highlight=False)
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("case", overflow="fold")
    table.add_column("modalities", overflow="fold")
    table.add_column("grid", overflow="fold")
    table.add_column("labels")
    table.add_column("status")
    for case in report.cases:
        grids = sorted({_grid(info) for info in case.images.values()})
        table.add_row(
            case.case_id,
            " ".join(case.images),
            "\n".join(grids) if len(grids) > 1 else "".join(grids),
            "-" if case.label_values is None else ",".join(map(str, case.label_values)),
            "[green]ok[/]" if not case.problems else f"[red]{len(case.problems)} problem(s)[/]",
        )
    console.print(table)
    for note in report.notes:
        console.print(f"note: {note}", highlight=False, soft_wrap=True)
    for problem in report.problems:
        console.print(f"[red]problem:[/] {problem}", highlight=False, soft_wrap=True)
    if not report.problems:
        console.print("[green]no problems found[/]")
