"""scripts/memory_scale.py trains on each folder and reports the peak memory of the run."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from contraseg.data.phantom import write_phantom
from tests.conftest import REPO, STARTS_PROCESSES
from tests.runners import process_env


@pytest.mark.slow(reason="the script starts a training process with a loader worker and samples "
                         "its memory (about 10 s)")
@STARTS_PROCESSES
def test_memory_scale_reports_each_folder(tmp_path):
    write_phantom(tmp_path / "ph", cases=3, size=24, seed=2)
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "memory_scale.py"), str(tmp_path / "ph"),
         "--out", str(tmp_path / "out"), "--cache", str(tmp_path / "cache"), "--steps", "2",
         "--preset", "tiny", "--workers", "1"],
        env=process_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = json.loads((tmp_path / "out" / "memory.json").read_text())
    assert len(rows) == 1 and rows[0]["cases"] == 3 and rows[0]["steps"] == 2
    assert rows[0]["workers"] == 1 and rows[0]["trainer_peak_rss_mb"] > 50
    if rows[0]["peak_tree_rss_mb"] is not None:  # Linux: the trainer and its worker
        assert rows[0]["peak_tree_rss_mb"] > rows[0]["trainer_peak_rss_mb"] * 0.5
        assert rows[0]["peak_tree_pss_mb"] <= rows[0]["peak_tree_rss_mb"]
    assert any((tmp_path / "cache").iterdir())  # the folder given, shared between runs
