"""Label conventions: raw values -> canonical classes -> regions, and back."""

from __future__ import annotations

import numpy as np
import pytest

from contraseg.data.labels import (
    CONVENTIONS,
    LabelConvention,
    convention_from_names,
    custom_convention,
    get_convention,
    infer_convention,
    label_values,
)
from contraseg.errors import ConfigError


@pytest.mark.parametrize(
    "name, raw, canonical",
    [
        ("brats2015", [0, 1, 2, 3, 4], [0, 1, 2, 1, 3]),
        ("brats2020", [0, 1, 2, 4], [0, 1, 2, 3]),
        ("brats2023", [0, 1, 2, 3], [0, 1, 2, 3]),
        ("msd", [0, 1, 2, 3], [0, 2, 1, 3]),
    ],
)
def test_raw_to_canonical(name, raw, canonical):
    conv = get_convention(name)
    assert conv.to_canonical(np.array(raw, dtype=np.float32)).tolist() == canonical


@pytest.mark.parametrize(
    "name, written_back",
    [
        ("brats2015", [0, 1, 2, 4]),
        ("brats2020", [0, 1, 2, 4]),
        ("brats2023", [0, 1, 2, 3]),
        ("msd", [0, 2, 1, 3]),
    ],
)
def test_canonical_back_to_raw(name, written_back):
    assert get_convention(name).to_raw(np.arange(4)).tolist() == written_back


def test_regions_are_the_brats_regions_for_every_brain_convention():
    # raw BraTS 2015 map: 1 necrosis, 2 edema, 3 non-enhancing, 4 enhancing
    raw = np.array([0, 1, 2, 3, 4])
    masks = get_convention("brats2015").region_masks(get_convention("brats2015").to_canonical(raw))
    assert masks["WT"].tolist() == [False, True, True, True, True]
    assert masks["TC"].tolist() == [False, True, False, True, True]
    assert masks["ET"].tolist() == [False, False, False, False, True]
    msd = get_convention("msd")
    masks = msd.region_masks(msd.to_canonical(np.array([0, 1, 2, 3])))  # 1 edema, 2 non-enh
    assert masks["TC"].tolist() == [False, False, True, True]


def test_unknown_values_raise_with_the_values():
    with pytest.raises(ValueError, match=r"\[4, 7\].*brats2023"):
        get_convention("brats2023").to_canonical(np.array([0, 1, 4, 7]))


def test_unknown_values_suggest_the_convention_they_look_like():
    """BraTS 2020 labels (1, 2, 4) read as 2023 suggest brats2020, and the reverse; values no
    convention explains suggest nothing."""
    problem = get_convention("brats2023").unknown_values_problem(np.array([0, 1, 2, 4]))
    assert problem.endswith("they look like brats2020: try --labels brats2020")
    problem = get_convention("brats2020").unknown_values_problem(np.array([0, 1, 3]))
    assert problem.endswith("try --labels brats2023")
    assert "try" not in get_convention("brats2023").unknown_values_problem(np.array([0, 9]))
    assert get_convention("brats2023").unknown_values_problem(np.array([0, 1, 3])) is None


def test_unknown_convention_lists_known_ones():
    with pytest.raises(ConfigError, match="brats2020"):
        get_convention("brats1999")


def test_custom_convention_and_round_trip_through_dict():
    conv = custom_convention({2: "warthin", 1: "pleomorphic"}, {"TUMOUR": [1, 2]}, name="parotid")
    assert conv.class_names == ("background", "pleomorphic", "warthin")
    assert conv.to_canonical(np.array([0, 2, 1])).tolist() == [0, 2, 1]
    assert dict(conv.regions) == {"TUMOUR": (1, 2)}
    assert LabelConvention.from_dict(conv.to_dict()) == conv
    for known in CONVENTIONS.values():
        assert LabelConvention.from_dict(known.to_dict()) == known


def test_custom_region_with_unknown_value_is_refused():
    with pytest.raises(ConfigError, match="unknown"):
        custom_convention({1: "tumour"}, {"X": [1, 5]})


@pytest.mark.parametrize(
    "values, expected",
    [
        ({0, 1, 2, 3, 4}, "brats2015"),
        ({0, 1, 2, 4}, "brats2020"),
        ({0, 2, 4}, "brats2020"),
        ({0, 1, 2, 3}, "brats2023"),
        ({0, 1, 2}, None),
        ({0}, None),
        ({0, 5}, None),
    ],
)
def test_infer_convention(values, expected):
    assert infer_convention(values) == expected


def test_label_values_on_integral_floats_and_non_integral_values():
    assert label_values(np.array([0.0, 4.0, 2.0, 2.0], dtype=np.float32)).tolist() == [0, 2, 4]
    assert label_values(np.array([0.0, 0.5])).tolist() == [0.0, 0.5]
    assert label_values(np.array([-1, 3], dtype=np.int16)).tolist() == [-1, 3]


def test_convention_from_dataset_json_names():
    assert (
        convention_from_names(
            {0: "background", 1: "edema", 2: "non-enhancing tumor", 3: "enhancing tumour"}
        )
        is CONVENTIONS["msd"]
    )
    assert convention_from_names({0: "background", 1: "NCR", 2: "ED", 3: "ET"}).name == "brats2023"
    other = convention_from_names({0: "background", 1: "lesion"})
    assert other.class_names == ("background", "lesion")
