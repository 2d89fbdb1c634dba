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
    # other: |0 - 2| and |2 - 0| on the 3 voxels both regions hold (the 10 is outside case 1's)
    assert scores == pytest.approx({"own": 0.0, "other": 2.0, "own_over_other": 0.0})


def test_one_generic_output_scores_the_same_against_every_case():
    normals = [np.zeros(3), np.full(3, 2.0), np.full(3, 5.0)]
    regions = [np.ones(3, bool)] * 3
    outputs = [np.ones(3)] * 3
    scores = script.input_dependence(outputs, normals, regions)
    # own: (1 + 1 + 4) / 3 = 2; other: case 0 (1 + 4) / 2, case 1 (1 + 4) / 2, case 2 (1 + 1) / 2
    assert scores["own"] == pytest.approx(2.0)
    assert scores["other"] == pytest.approx((2.5 + 2.5 + 1.0) / 3)
    assert scores["own_over_other"] == pytest.approx(2.0 / 2.0)
