"""The measured minimum useful budget of each method on real scans: after how many training
minutes (every stage, one thread) and steps of its `cpu` preset its mean Dice (WT, TC, ET, all
four modalities, the 5 test cases of the fixed BraTS 2018 split) reaches the plain MONAI
recipe's after 25 minutes on one thread, or that it did not within its run. `contraseg
methods` shows it.

The figures live in configs/useful_budgets.json, written from the archived learning curves by
scripts/real_benchmark/useful_budgets.py, never by hand.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources

BUDGETS_FILE = "useful_budgets.json"


@dataclass(frozen=True)
class UsefulBudget:
    minutes: float | None  # None: not reached within `within_minutes`
    steps: int | None
    within_minutes: float  # the length of the measured run
    commit: str | None = None

    def describe(self) -> str:
        if self.minutes is None:
            return f"not within {self.within_minutes:.0f} min"
        return f"{self.minutes:.0f} min, {self.steps:,} steps"


def load_budgets(text: str | None = None) -> dict[str, UsefulBudget]:
    """Method name -> its measured budget (the packaged file, or `text` in its format)."""
    if text is None:
        source = resources.files("contraseg.configs") / BUDGETS_FILE
        if not source.is_file():
            return {}
        text = source.read_text()
    methods = json.loads(text).get("methods", {})
    return {name: UsefulBudget(entry["minutes"], entry["steps"], entry["within_minutes"],
                               entry.get("commit"))
            for name, entry in methods.items()}
