"""Label conventions: raw label values of a dataset -> canonical classes -> evaluation regions.

Canonical classes are consecutive integers with background 0. For brain tumours they are
1 necrosis / non-enhancing core, 2 edema, 3 enhancing, and the regions are WT={1,2,3}, TC={1,3},
ET={3}. Each convention states how its raw values map onto those classes, and how to map back so
that a prediction is written with the dataset's own values.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from contraseg.errors import ConfigError

BRAIN_CLASS_NAMES = ("background", "necrosis", "edema", "enhancing")
MAX_UNKNOWN_LISTED = 16  # more unknown values than this: an image given as a label map
BRAIN_REGIONS: dict[str, tuple[int, ...]] = {"WT": (1, 2, 3), "TC": (1, 3), "ET": (3,)}


@dataclass(frozen=True)
class LabelConvention:
    """How the raw values of one dataset map to canonical classes and regions."""

    name: str
    raw_to_class: Mapping[int, int]
    class_names: tuple[str, ...]
    regions: Mapping[str, tuple[int, ...]]
    class_to_raw: Mapping[int, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.class_to_raw:  # first raw value of each class, in raw order
            inverse: dict[int, int] = {}
            for raw, cls in sorted(self.raw_to_class.items()):
                inverse.setdefault(cls, raw)
            object.__setattr__(self, "class_to_raw", inverse)

    @property
    def num_classes(self) -> int:
        """Number of canonical classes, background included."""
        return len(self.class_names)

    @property
    def raw_values(self) -> tuple[int, ...]:
        """Every raw value this convention accepts, background (0) included."""
        return tuple(sorted({0, *self.raw_to_class}))

    def unknown_values(self, values: set[int] | np.ndarray) -> list[int]:
        """The raw values in `values` that this convention does not know."""
        return sorted(set(int(v) for v in values) - set(self.raw_values))

    def unknown_values_problem(self, values: set[int] | np.ndarray) -> str | None:
        """'label values [5] are not in convention ...' when some values are unknown, else None."""
        unknown = self.unknown_values(values)
        if not unknown:
            return None
        if len(unknown) > MAX_UNKNOWN_LISTED:
            return (f"{len(values)} distinct values ({', '.join(map(str, unknown[:5]))}, ...): "
                    "this looks like an image, not a label map")
        problem = f"label values {unknown} are not in convention {self.name} {self.raw_values}"
        guess = infer_convention(values)
        if guess is not None and guess != self.name:
            problem += f"; they look like {guess}: try --labels {guess}"
        return problem

    def to_canonical(self, raw: np.ndarray, *, checked: bool = False) -> np.ndarray:
        """Map a raw label map to canonical classes (uint8). Unknown values raise ValueError;
        `checked=True` skips that check, for a part of a map already checked whole (training
        patches)."""
        if not checked:
            problem = self.unknown_values_problem(label_values(raw))
            if problem:
                raise ValueError(problem)
        lut = np.zeros(max(self.raw_values) + 1, dtype=np.uint8)
        for raw_value, cls in self.raw_to_class.items():
            lut[raw_value] = cls
        raw = np.asarray(raw)
        return lut[raw if raw.dtype.kind in "ui" else np.rint(raw).astype(np.int64)]

    def to_raw(self, canonical: np.ndarray, dtype: np.dtype | type = np.uint8) -> np.ndarray:
        """Map canonical classes back to this dataset's raw values."""
        lut = np.zeros(self.num_classes, dtype=dtype)
        for cls, raw_value in self.class_to_raw.items():
            lut[cls] = raw_value
        return lut[np.asarray(canonical, dtype=np.int64)]

    def region_masks(self, canonical: np.ndarray) -> dict[str, np.ndarray]:
        """Boolean mask of each region from a canonical class map."""
        return {name: np.isin(canonical, classes) for name, classes in self.regions.items()}

    def to_dict(self) -> dict:
        """A JSON-ready description (stored with runs, checkpoints and reports)."""
        return {
            "name": self.name,
            "raw_to_class": {str(k): v for k, v in sorted(self.raw_to_class.items())},
            "class_names": list(self.class_names),
            "regions": {k: list(v) for k, v in self.regions.items()},
            "class_to_raw": {str(k): v for k, v in sorted(self.class_to_raw.items())},
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> LabelConvention:
        return cls(
            name=str(data["name"]),
            raw_to_class={int(k): int(v) for k, v in data["raw_to_class"].items()},
            class_names=tuple(data["class_names"]),
            regions={k: tuple(int(c) for c in v) for k, v in data["regions"].items()},
            class_to_raw={int(k): int(v) for k, v in data.get("class_to_raw", {}).items()},
        )


def _brain(name: str, raw_to_class: dict[int, int]) -> LabelConvention:
    return LabelConvention(name, raw_to_class, BRAIN_CLASS_NAMES, BRAIN_REGIONS)


CONVENTIONS: dict[str, LabelConvention] = {
    # BraTS 2013-2015: 1 necrosis, 2 edema, 3 non-enhancing, 4 enhancing.
    # WT={1,2,3,4}, TC={1,3,4}, ET={4}; written back with 1 for the core (3 is not recoverable).
    "brats2015": _brain("brats2015", {1: 1, 2: 2, 3: 1, 4: 3}),
    # BraTS 2017-2021: 1 NCR/NET, 2 ED, 4 ET.
    "brats2020": _brain("brats2020", {1: 1, 2: 2, 4: 3}),
    # BraTS 2023+: 1 NCR, 2 ED (SNFH), 3 ET.
    "brats2023": _brain("brats2023", {1: 1, 2: 2, 3: 3}),
    # MSD Task01_BrainTumour: 1 edema, 2 non-enhancing tumour, 3 enhancing tumour.
    "msd": _brain("msd", {1: 2, 2: 1, 3: 3}),
}


WHOLE_TUMOUR_CLASSES = ("background", "tumour")


def whole_tumour(convention: LabelConvention) -> LabelConvention:
    """`convention` with every foreground value merged into one class, region WT (the
    whole-tumour-only training of CLFC's released code; `data.whole_tumour=true`)."""
    if is_whole_tumour(convention):
        return convention
    return LabelConvention(f"{convention.name}-wt", {raw: 1 for raw in convention.raw_to_class},
                           WHOLE_TUMOUR_CLASSES, {"WT": (1,)})


def is_whole_tumour(convention: LabelConvention) -> bool:
    return tuple(convention.class_names) == WHOLE_TUMOUR_CLASSES and "WT" in convention.regions


def custom_convention(
    classes: Mapping[int, str],
    regions: Mapping[str, list[int]] | None = None,
    name: str = "custom",
) -> LabelConvention:
    """A convention for any other dataset.

    `classes` maps raw values (background 0 excluded) to class names; each raw value becomes one
    canonical class, in increasing raw order. `regions` maps a region name to raw values; without
    it each class is its own region, named by its upper-cased class name.
    """
    raw_sorted = sorted(int(v) for v in classes if int(v) != 0)
    if not raw_sorted:
        raise ConfigError(f"label convention {name}: no foreground class is listed")
    raw_to_class = {raw: i + 1 for i, raw in enumerate(raw_sorted)}
    class_names = ("background", *(str(classes[raw]) for raw in raw_sorted))
    if regions is None:
        regions = {str(classes[raw]).upper(): [raw] for raw in raw_sorted}
    canonical_regions = {}
    for region, raw_list in regions.items():
        missing = [int(r) for r in raw_list if int(r) not in raw_to_class]
        if missing:
            raise ConfigError(f"label convention {name}: region {region} uses unknown {missing}")
        canonical_regions[str(region)] = tuple(sorted(raw_to_class[int(r)] for r in raw_list))
    return LabelConvention(name, raw_to_class, class_names, canonical_regions)


def get_convention(name: str | LabelConvention | Mapping) -> LabelConvention:
    """Look a convention up by name (or pass one through / rebuild one from its dict)."""
    if isinstance(name, LabelConvention):
        return name
    if isinstance(name, Mapping):
        return LabelConvention.from_dict(name)
    try:
        return CONVENTIONS[name.lower()]
    except KeyError:
        known = ", ".join(CONVENTIONS)
        raise ConfigError(f"unknown label convention '{name}' (known: {known}, custom)") from None


def label_values(labels: np.ndarray) -> np.ndarray:
    """The distinct values of a label map, fast for small non-negative integers.

    Non-integral values (a float map with 0.5) are returned as they are, so callers can report
    them; integral floats (0.0, 1.0, ... as in many float32 segmentations) count as integers.
    """
    arr = np.asarray(labels)
    if arr.dtype.kind == "f":
        rounded = np.rint(arr)
        if not np.array_equal(rounded, arr):
            return np.unique(arr[np.isfinite(arr)])
        arr = rounded.astype(np.int64)
    if arr.size and arr.dtype.kind in "iu" and arr.min() >= 0 and arr.max() < 65536:
        return np.flatnonzero(np.bincount(arr.ravel()))
    return np.unique(arr)


def infer_convention(values: set[int] | np.ndarray) -> str | None:
    """Guess a brain-tumour convention from the raw values present, or None when unsure.

    3 and 4 together only occur in BraTS 2015; 4 without 3 is BraTS 2017-2021; values within
    {1, 2, 3} are read as BraTS 2023 (MSD uses the same values with another meaning, which is why
    MSD and nnU-Net folders take their convention from dataset.json instead).
    """
    present = {int(v) for v in values} - {0}
    if not present:
        return None
    if present <= {1, 2, 3, 4} and {3, 4} <= present:
        return "brats2015"
    if present <= {1, 2, 4}:
        return "brats2020" if 4 in present else None
    if present <= {1, 2, 3}:
        return "brats2023"
    return None


def _brain_class_of(label_name: str) -> int | None:
    """Canonical brain class named by a dataset.json label ("non-enhancing tumor" -> 1, ...)."""
    tokens = re.split(r"[\s_/\-]+", label_name.lower())
    core_words = ("ncr", "net", "non")
    if any(t.startswith(("necro", "nonenh")) or t in core_words for t in tokens):
        return 1
    if any(t.startswith("enhanc") or t == "et" for t in tokens):
        return 3
    if any(t.startswith(("edema", "oedema", "snfh")) or t == "ed" for t in tokens):
        return 2
    return None


def convention_from_names(
    labels: Mapping[int, str], name: str = "dataset.json"
) -> LabelConvention:
    """Build a convention from `{raw value: class name}` as MSD and nnU-Net dataset.json give it.

    When the names are the three brain-tumour classes the result uses the canonical brain classes
    (and is the `msd` convention for MSD Task01's names); otherwise it is a custom convention.
    """
    foreground = {int(k): str(v) for k, v in labels.items() if int(k) != 0}
    mapping = {raw: _brain_class_of(label) for raw, label in foreground.items()}
    if sorted(c for c in mapping.values() if c is not None) == [1, 2, 3]:
        raw_to_class = {raw: cls for raw, cls in mapping.items() if cls is not None}
        if raw_to_class == dict(CONVENTIONS["msd"].raw_to_class):
            return CONVENTIONS["msd"]
        for known in CONVENTIONS.values():
            if raw_to_class == dict(known.raw_to_class):
                return known
        return _brain(name, raw_to_class)
    return custom_convention(foreground, name=name)


def convention_from_nested_regions(
    regions: Mapping[str, list[int] | int], name: str = "dataset.json"
) -> LabelConvention:
    """nnU-Net region-based labels (e.g. whole tumour [1,2,3] > tumour core [2,3] > ET 3).

    A chain of three nested regions of sizes 3, 2 and 1 is read as WT > TC > ET: the value only in
    WT is edema, the value in TC but not ET is necrosis, ET's value is enhancing. Anything else
    becomes a custom convention with one region per entry.
    """
    sets = {k: {int(v)} if isinstance(v, int) else {int(x) for x in v} for k, v in regions.items()}
    sets = {k: v - {0} for k, v in sets.items() if v - {0}}
    chain = sorted(sets.values(), key=len, reverse=True)
    if [len(s) for s in chain] == [3, 2, 1] and chain[0] > chain[1] > chain[2]:
        (et,) = chain[2]
        (ncr,) = chain[1] - chain[2]
        (ed,) = chain[0] - chain[1]
        return convention_from_names({ncr: "necrosis", ed: "edema", et: "enhancing"}, name)
    values = sorted(set().union(*sets.values())) if sets else []
    return custom_convention(
        {v: f"class{v}" for v in values}, {k: sorted(v) for k, v in sets.items()}, name
    )
