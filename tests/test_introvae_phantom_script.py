"""scripts/introvae_phantom.py's input-dependence measure (issue 16, point 6): does the
generator's output follow its own case, or is it one generic brain?"""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import REPO, load_script

script = load_script(REPO / "scripts" / "introvae_phantom.py")


def test_faithful_outputs_score_zero_against_their_own_case_only():
    normals = [np.zeros(4), np.array([2.0, 2.0, 2.0, 10.0])]
    regions = [np.ones(4, bool), np.array([True, True, True, False])]
    outputs = [np.zeros(4), np.full(4, 2.0)]
    scores = script.input_dependence(outputs, normals, regions)
    # other and between: |0 - 2| and |2 - 0| on the 3 voxels both regions hold (the 10 is
    # outside case 1's region, so it counts for neither pair)
    assert scores == pytest.approx({"own": 0.0, "other": 2.0, "own_over_other": 0.0,
                                    "between": 2.0})


def test_one_generic_output_scores_the_same_against_every_case():
    normals = [np.zeros(3), np.full(3, 2.0), np.full(3, 5.0)]
    regions = [np.ones(3, bool)] * 3
    outputs = [np.ones(3)] * 3
    scores = script.input_dependence(outputs, normals, regions)
    # the six ordered pairs (i, j): own |1 - n_i| is 1, 1, 1, 1, 4, 4; other |1 - n_j| is
    # 1, 4, 1, 4, 1, 1: both average 2, so the ratio is exactly 1
    assert scores["own"] == pytest.approx(2.0)
    assert scores["other"] == pytest.approx(2.0)
    assert scores["own_over_other"] == pytest.approx(1.0)
    # between: |0 - 2|, |0 - 5|, |2 - 5|, each twice
    assert scores["between"] == pytest.approx((2 + 5 + 3) / 3)
