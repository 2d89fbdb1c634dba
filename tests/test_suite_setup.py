"""The test suite's own set-up: what `make test` relies on to run tests side by side."""

from __future__ import annotations

import os
import re
import subprocess
import sys

GROUPED = '''
import pytest

pytestmark = pytest.mark.xdist_group("together")

@pytest.mark.parametrize("i", range(6))
def test_grouped(i):
    pass
'''


def test_pytest_xdist_runs_a_group_in_one_worker(tmp_path):
    """`--dist loadgroup` keeps the tests of an `xdist_group` in one worker (the suite's DDP,
    loader-worker and shared-fixture tests rely on it). With pytest 9.2 pytest-xdist stops
    grouping without a word (pytest-xdist#1386): this test then fails."""
    (tmp_path / "test_grouped.py").write_text(GROUPED)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")  # none of the suite's settings
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    result = subprocess.run([sys.executable, "-m", "pytest", "-n", "2", "--dist", "loadgroup",
                             "-v", "-p", "no:cacheprovider", str(tmp_path)], cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    workers = re.findall(r"\[(gw\d+)\].*PASSED", result.stdout)
    assert len(workers) == 6, result.stdout[-2000:]
    assert len(set(workers)) == 1, f"the group ran on {sorted(set(workers))}"
