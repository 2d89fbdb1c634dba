"""The modality-subset protocol: the 2^M - 1 subsets, their names, order, parsing and markers."""

from __future__ import annotations

import pytest

from contraseg.errors import ConfigError
from contraseg.evaluation.protocol import (
    all_subsets,
    availability,
    parse_subsets,
    subset_from_name,
    subset_markers,
    subset_name,
)

MODS = ("flair", "t1", "t1c", "t2")


def test_all_subsets_of_four_modalities() -> None:
    subsets = all_subsets(MODS)
    assert len(subsets) == 15 == len(set(subsets))
    assert [len(s) for s in subsets] == [1] * 4 + [2] * 6 + [3] * 4 + [4]
    assert [subset_name(s) for s in subsets] == [
        "flair", "t1", "t1c", "t2",
        "flair+t1", "flair+t1c", "flair+t2", "t1+t1c", "t1+t2", "t1c+t2",
        "flair+t1+t1c", "flair+t1+t2", "flair+t1c+t2", "t1+t1c+t2",
        "flair+t1+t1c+t2",
    ]


def test_all_subsets_follow_the_given_modality_order() -> None:
    assert all_subsets(("t2", "adc")) == [("t2",), ("adc",), ("t2", "adc")]
    assert len(all_subsets(("a", "b", "c", "d", "e"))) == 31


@pytest.mark.parametrize("bad", [(), ("t1", "t1"), ("t1+t2",), ("a,b",)])
def test_bad_modality_lists(bad) -> None:
    with pytest.raises(ConfigError):
        all_subsets(bad)


def test_subset_from_name_normalises_order_and_case() -> None:
    assert subset_from_name("T1C+flair", MODS) == ("flair", "t1c")
    with pytest.raises(ConfigError, match="'flair\\+flair'"):
        subset_from_name("flair+flair", MODS)


def test_near_miss_subsets_suggest_what_was_meant() -> None:
    with pytest.raises(ConfigError) as error:
        parse_subsets("flari,T1C+flari,zz", MODS)
    message = str(error.value)
    assert "'flari' (did you mean 'flair'?)" in message
    assert "'T1C+flari' (did you mean 'T1C+flair'?)" in message
    assert "'zz' (modalities" in message  # nothing close: no suggestion


def test_parse_subsets_keywords() -> None:
    assert parse_subsets("all", MODS) == all_subsets(MODS)
    assert parse_subsets("full", MODS) == [MODS]
    assert parse_subsets(" singles ", MODS) == [("flair",), ("t1",), ("t1c",), ("t2",)]


def test_parse_subsets_names_are_deduplicated_in_protocol_order() -> None:
    chosen = parse_subsets("t1c+flair,flair,full,flair+t1c", MODS)
    assert chosen == [("flair",), ("flair", "t1c"), MODS]


def test_parse_subsets_names_every_unknown_item() -> None:
    with pytest.raises(ConfigError) as info:
        parse_subsets("flair,dwi,t1+pd,t2", MODS)
    message = str(info.value)
    assert "'dwi'" in message and "'t1+pd'" in message
    assert "'flair'" not in message


@pytest.mark.parametrize("spec", ["", " , ", "flair,", "flair++t1"])
def test_parse_subsets_rejects_empty_items(spec) -> None:
    with pytest.raises(ConfigError):
        parse_subsets(spec, MODS)


def test_availability_and_markers() -> None:
    assert availability(("flair", "t1c", "t2"), MODS) == [True, False, True, True]
    assert subset_markers(("flair", "t1c", "t2"), MODS) == "●○●●"
    assert subset_markers(("t2",), MODS) == "○○○●"
    with pytest.raises(ConfigError):
        availability(("pd",), MODS)
