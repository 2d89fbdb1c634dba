"""Memory figures: a process tree's resident memory includes its children."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from contraseg.utils.memory import TreePeak, peak_rss_mb, tree_memory_mb


def test_peak_rss_of_this_process_is_plausible():
    assert 20 < peak_rss_mb() < 100_000


@pytest.mark.skipif(not Path("/proc/self/smaps_rollup").is_file(), reason="needs Linux /proc")
def test_tree_memory_counts_a_child_that_holds_memory():
    alone = tree_memory_mb()
    child = subprocess.Popen([sys.executable, "-c", "import sys, time\n"
                              "block = bytearray(300 * 2**20)\n"  # 300 MiB, touched (zeroed)
                              "print('ready', flush=True); time.sleep(30)"],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        with TreePeak(interval=0.02) as peak:
            time.sleep(0.2)
        both = tree_memory_mb()
    finally:
        child.kill()
        child.wait()
    assert both["rss"] - alone["rss"] > 250 and both["pss"] - alone["pss"] > 250
    assert peak.peak["rss"] >= both["rss"] * 0.9
