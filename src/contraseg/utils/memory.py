"""Resident memory: a process's peak, and the peak of a process with all its descendants.

No library reads a process tree's memory without psutil (not a dependency), so this reads
Linux's /proc directly; elsewhere the tree figure is None.
"""

from __future__ import annotations

import os
import resource
import sys
import threading
from pathlib import Path


def peak_rss_mb(who: str = "self") -> float:
    """The peak resident set of this process ("self") or of the largest of its finished
    children ("children"), in MiB (getrusage: kilobytes on Linux, bytes on macOS)."""
    usage = resource.getrusage(resource.RUSAGE_SELF if who == "self" else
                               resource.RUSAGE_CHILDREN).ru_maxrss
    return usage / (1024 * 1024 if sys.platform == "darwin" else 1024)


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            out += [int(p) for p in task.read_text().split()]
        except OSError:
            continue  # the thread ended meanwhile
    return out


def _memory_kb(pid: int) -> tuple[int, int]:
    """(Rss, Pss) of a process in kB (0, 0 once it has ended)."""
    values = {"Rss:": 0, "Pss:": 0}
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            key = line.split(maxsplit=1)[0] if line else ""
            if key in values:
                values[key] = int(line.split()[1])
    except OSError:
        pass  # the process ended meanwhile
    return values["Rss:"], values["Pss:"]


def tree_memory_mb(pid: int | None = None) -> dict[str, float] | None:
    """The memory of `pid` (default: this process) and all its descendants, in MiB: `rss`
    summed (pages that forked workers share counted in each: an upper bound) and `pss` summed
    (shared pages split between their users: what the tree holds); None without /proc."""
    pid = os.getpid() if pid is None else pid
    if not Path(f"/proc/{pid}/smaps_rollup").is_file():
        return None
    rss = pss = 0
    todo = [pid]
    while todo:
        current = todo.pop()
        one = _memory_kb(current)
        rss, pss = rss + one[0], pss + one[1]
        todo += _children(current)
    return {"rss": rss / 1024, "pss": pss / 1024}


class TreePeak:
    """Samples `tree_memory_mb(pid)` every `interval` seconds in a thread while in the `with`
    block, and whenever `sample()` is called; `.peak` holds the largest `rss` and `pss` seen
    (None without /proc)."""

    def __init__(self, pid: int | None = None, interval: float = 0.1):
        self.pid, self.interval = pid, interval
        self.peak: dict[str, float] | None = None
        self._stop, self._lock = threading.Event(), threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> None:
        """Take one sample now (also called by the thread): a caller that knows when the tree
        is at its largest (workers alive) need not rely on the thread's timing."""
        with self._lock:
            value = tree_memory_mb(self.pid)
            if value is not None:
                self.peak = {k: max((self.peak or {}).get(k, 0.0), v) for k, v in value.items()}

    def _run(self) -> None:
        while True:
            self.sample()
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> TreePeak:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
