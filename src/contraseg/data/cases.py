"""What a dataset is made of: cases, each a set of modality files, a label and extras."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from contraseg.data.labels import LabelConvention


@dataclass(frozen=True)
class ImageRef:
    """One modality of one case: a 3D file, or one volume of a 4D file (MSD)."""

    path: Path
    channel: int | None = None

    def __str__(self) -> str:
        return str(self.path) if self.channel is None else f"{self.path}[{self.channel}]"


@dataclass
class CaseSpec:
    """The files of one case, by modality name, as found on disk (nothing is read yet)."""

    case_id: str
    images: dict[str, ImageRef]
    label: Path | None = None
    brain_mask: Path | None = None
    extras: dict[str, Path] = field(default_factory=dict)  # e.g. "normal_t1" (phantom, CLFC)
    missing: dict[str, Path] = field(default_factory=dict)  # modality -> where it was expected

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(self.images)

    def present_only(self) -> CaseSpec:
        """The same case without its expected-but-absent files, so that loading reads what
        exists (training and evaluation treat an absent modality as missing, not as an error)."""
        return replace(self, missing={})


@dataclass
class DatasetSpec:
    """A discovered dataset: its layout, modality names (channel order), labels and cases."""

    root: Path
    layout: str
    modalities: tuple[str, ...]
    convention: LabelConvention | None
    cases: list[CaseSpec]
    notes: list[str] = field(default_factory=list)  # how the layout was recognised, guesses made

    def case(self, case_id: str) -> CaseSpec:
        for case in self.cases:
            if case.case_id == case_id:
                return case
        raise KeyError(case_id)
