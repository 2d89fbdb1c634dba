"""The modality-subset protocol: every non-empty subset of the modalities, named and ordered.

For M modalities there are 2^M - 1 non-empty subsets (15 for the four BraTS sequences). RFNet,
mmFormer and DC-Seg evaluate a model on each of them and report their mean. Here a subset is a
tuple of modality names, always in the dataset's modality order, and its name joins them with
"+" (``("flair", "t1c") -> "flair+t1c"``).

Order: as DC-Seg's Table 1 groups its rows, single modalities first, then pairs, triples and
the full set. Within one size the subsets follow the order of ``modalities`` (itertools
combinations order). Divergence: Table 1 orders the subsets inside a size as RFNet's mask list
does (e.g. T2, T1c, T1, FLAIR for the singles); that order is specific to four modalities, so it
is not copied.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations

from contraseg.errors import ConfigError
from contraseg.utils.text import close_match

Subset = tuple[str, ...]
SEPARATOR = "+"
FILLED = "\u25cf"  # ● available
EMPTY = "\u25cb"  # ○ missing
KEYWORDS = ("all", "full", "singles")


def _check_modalities(modalities: Sequence[str]) -> tuple[str, ...]:
    mods = tuple(str(m) for m in modalities)
    if not mods:
        raise ConfigError("the modality list is empty")
    if len(set(mods)) != len(mods):
        raise ConfigError(f"modality names repeat: {', '.join(mods)}")
    bad = [m for m in mods if not m or SEPARATOR in m or "," in m]
    if bad:
        raise ConfigError(f"modality names may not be empty or contain '+' or ',': {bad}")
    return mods


def all_subsets(modalities: Sequence[str]) -> list[Subset]:
    """All 2^M - 1 non-empty subsets: singles, pairs, ..., the full set (see module docstring)."""
    mods = _check_modalities(modalities)
    return [combo for size in range(1, len(mods) + 1) for combo in combinations(mods, size)]


def subset_name(subset: Sequence[str]) -> str:
    """The subset's name: its modalities joined by '+' (``"flair+t1c"``).

    The subset must already be in the dataset's modality order (as every function here returns
    it); use :func:`subset_from_name` to normalise a user's spelling.
    """
    if not subset:
        raise ConfigError("a modality subset may not be empty")
    return SEPARATOR.join(subset)


def _lookup(modalities: tuple[str, ...]) -> dict[str, str]:
    """Lower-cased name -> modality name, so that user input is matched case-insensitively."""
    lowered = {m.lower(): m for m in modalities}
    return lowered if len(lowered) == len(modalities) else {m: m for m in modalities}


def _parse_name(name: str, modalities: tuple[str, ...]) -> Subset | str:
    """The subset a name denotes, or the part of the name that is not understood."""
    lookup = _lookup(modalities)
    parts = [p.strip() for p in name.split(SEPARATOR)]
    chosen = set()
    for part in parts:
        key = part if part in lookup else part.lower()
        if key not in lookup or lookup[key] in chosen:
            return name
        chosen.add(lookup[key])
    return tuple(m for m in modalities if m in chosen)


def _near_miss(name: str, modalities: tuple[str, ...]) -> str | None:
    """The subset name meant when every unknown part of `name` is a near miss ('t1c+flair'
    for 't1c+flari'), else None."""
    lookup = _lookup(modalities)
    fixed = [part if part in lookup or part.lower() in lookup else close_match(part, modalities)
             for part in (p.strip() for p in name.split(SEPARATOR))]
    return SEPARATOR.join(fixed) if all(fixed) else None


def _unknown_subset(name: str, modalities: tuple[str, ...]) -> str:
    meant = _near_miss(name, modalities)
    return f"'{name}'" + (f" (did you mean '{meant}'?)" if meant else "")


def subset_from_name(name: str, modalities: Sequence[str]) -> Subset:
    """The subset named ``name`` (any order, any case: "T1C+flair"), in modality order."""
    mods = _check_modalities(modalities)
    parsed = _parse_name(name, mods)
    if isinstance(parsed, str):
        raise ConfigError(f"unknown modality subset {_unknown_subset(name, mods)} "
                          f"(modalities: {', '.join(mods)})")
    return parsed


def _keyword_subsets(keyword: str, mods: tuple[str, ...]) -> list[Subset]:
    if keyword == "all":
        return all_subsets(mods)
    if keyword == "full":
        return [mods]
    return [(m,) for m in mods]  # singles


def parse_subsets(spec: str, modalities: Sequence[str]) -> list[Subset]:
    """The subsets a command-line value selects, deduplicated, in :func:`all_subsets` order.

    ``spec`` is "all", "full", "singles", or a comma-separated list of subset names and those
    keywords ("flair,t1c+flair,full"). Names match modality names case-insensitively and in any
    order. Unknown names raise ConfigError naming every one of them.
    """
    mods = _check_modalities(modalities)
    items = [item.strip() for item in str(spec).split(",")]
    if not any(items):
        raise ConfigError("the subset selection is empty (use 'all', 'full', 'singles' or names)")
    chosen: set[Subset] = set()
    unknown: list[str] = []
    for item in items:
        if item.lower() in KEYWORDS:
            chosen.update(_keyword_subsets(item.lower(), mods))
            continue
        parsed = _parse_name(item, mods) if item else item
        if isinstance(parsed, str):
            unknown.append(_unknown_subset(item, mods))
        else:
            chosen.add(parsed)
    if unknown:
        raise ConfigError(
            f"unknown modality subset(s) {', '.join(unknown)} (modalities: {', '.join(mods)}; "
            f"keywords: {', '.join(KEYWORDS)})"
        )
    return [s for s in all_subsets(mods) if s in chosen]


def availability(subset: Sequence[str], modalities: Sequence[str]) -> list[bool]:
    """One flag per modality, in modality order: True where the subset has it."""
    mods = _check_modalities(modalities)
    extra = [m for m in subset if m not in mods]
    if extra:
        raise ConfigError(f"subset has modalities {extra} not in {', '.join(mods)}")
    members = set(subset)
    return [m in members for m in mods]


def subset_markers(subset: Sequence[str], modalities: Sequence[str]) -> str:
    """Table 1 style markers, one per modality: ● available, ○ missing ("●○●●")."""
    return "".join(FILLED if flag else EMPTY for flag in availability(subset, modalities))
