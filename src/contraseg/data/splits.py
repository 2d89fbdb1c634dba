"""Published patient-wise splits: the lists the papers trained and tested on, as data.

`data/split_lists/NAME.json` holds one split (RFNet's three BraTS 2018 draws, the BraTS 2020
split of RFNet and DC-Seg, IM-Fuse's BraTS 2023 split, five patient-wise BraTS 2023 folds),
each with its source (repository, commit, files) and, where a paper published no list, a file
that says so and holds none (`scripts/published_splits.py` builds them from the sources).

A split is named `NAME` or `NAME:k` (its k-th fold or draw, counted from 1 as the papers do;
the first when k is left out), or given as a JSON file of the same form. Its case IDs are the
datasets' own case names (`Brats18_CBICA_AAB_1`, `BraTS20_Training_001`,
`BraTS-GLI-00000-000`), matched to the cases contraseg discovers by case ID.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from contraseg.errors import ConfigError, InputError
from contraseg.utils.resources import json_files
from contraseg.utils.text import did_you_mean

PARTS = ("train", "val", "test")
LISTED = 8  # missing case IDs named in a refusal


@dataclass(frozen=True)
class PatientSplit:
    """One fold (or draw) of a split: the case IDs of each part, and where they come from."""

    name: str  # NAME:k
    title: str
    train: tuple[str, ...]
    val: tuple[str, ...]
    test: tuple[str, ...]
    source: dict

    def parts(self) -> dict[str, list[str]]:
        return {part: list(getattr(self, part)) for part in PARTS}

    @property
    def cases(self) -> list[str]:
        return [case for part in PARTS for case in getattr(self, part)]


def split_files() -> dict[str, Path]:
    """The shipped split files by name."""
    return json_files("contraseg.data", "split_lists")


def split_names() -> list[str]:
    """The published splits shipped with contraseg (those without a list included)."""
    return sorted(split_files())


def read_split_file(path: Path) -> dict:
    """A split file's content, refused in one line when it is not one."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(path, f"not a readable split file ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("folds"), list):
        raise InputError(path, "a split file needs 'folds': a list of {train, val, test} lists")
    for index, fold in enumerate(data["folds"]):
        if not isinstance(fold, dict) or not all(
                isinstance(fold.get(p, []), list) for p in PARTS):
            raise InputError(path, f"fold {index + 1}: expected lists 'train', 'val', 'test'")
    return data


def parse_split(spec: str) -> tuple[str, int | None]:
    """`NAME:k` or `FILE.json:k` -> (NAME or FILE.json, k); without `:k`, k is None."""
    base, _, k = spec.rpartition(":") if re.search(r":\d+$", spec) else (spec, "", "")
    return base, int(k) if k else None


def load_split(spec: str) -> PatientSplit:
    """`NAME`, `NAME:k` or a JSON file (`FILE.json`, `FILE.json:k`) -> its k-th fold."""
    base, k = parse_split(spec)
    files = split_files()
    if base in files:
        path = files[base]
    elif base.endswith(".json") or Path(base).is_file():
        path = Path(base)
    else:
        raise ConfigError(f"--split {spec}: no such split (shipped: {', '.join(sorted(files))}; "
                          "or give a JSON file)" + did_you_mean(base, list(files)))
    data = read_split_file(path)
    name = data.get("name", Path(path).stem)
    if not data["folds"]:
        note = data.get("source", {}).get("note", "")
        raise ConfigError(f"--split {spec}: {name} publishes no patient list. {note}".strip())
    index = 1 if k is None else k
    if not 1 <= index <= len(data["folds"]):
        raise ConfigError(f"--split {spec}: {name} has folds 1 to {len(data['folds'])}")
    fold = data["folds"][index - 1]
    return PatientSplit(f"{name}:{index}", data.get("title", name),
                        *(tuple(fold.get(part, [])) for part in PARTS),
                        source=data.get("source", {}))


def keyed_split(split: PatientSplit, keys: Iterable[str], where: Path | str
                ) -> dict[str, list[str]]:
    """The split on a run's case keys (`<data folder>/<case>`): each listed case ID matched to
    the key of the case with that ID. A split that names cases the data lacks is refused in
    one line naming them (and how many were found)."""
    by_case: dict[str, list[str]] = {}
    for key in keys:
        by_case.setdefault(key.rsplit("/", 1)[-1], []).append(key)
    doubles = sorted(case for case, found in by_case.items()
                     if len(found) > 1 and case in set(split.cases))
    if doubles:
        raise InputError(where, f"split {split.name}: case {doubles[0]} is in several data "
                                f"folders ({', '.join(by_case[doubles[0]])})")
    missing = [case for case in split.cases if case not in by_case]
    if missing:
        shown = ", ".join(missing[:LISTED]) + (", ..." if len(missing) > LISTED else "")
        found = len(split.cases) - len(missing)
        raise InputError(where, f"split {split.name} names {len(missing)} case(s) the data "
                                f"lacks ({found} of its {len(split.cases)} found): {shown}")
    return {part: sorted(by_case[case][0] for case in getattr(split, part)) for part in PARTS}
