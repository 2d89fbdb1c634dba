"""The papers' reported tables as data (`evaluation/paper_tables/NAME.json`, built from the
papers' texts by scripts/paper_tables.py): each with its table, dataset, split, metric and the
protocol the paper states, so a run's report can be set beside the figures the paper printed.
"""

from __future__ import annotations

import json
from pathlib import Path

from contraseg.errors import ConfigError
from contraseg.utils.resources import json_files
from contraseg.utils.text import did_you_mean


def paper_table_files() -> dict[str, Path]:
    """The shipped paper tables by name."""
    return json_files("contraseg.evaluation", "paper_tables")


def load_paper_table(name: str) -> dict:
    """A paper's table by name (`dc-seg-brats2020`, ...), refused by name when unknown."""
    files = paper_table_files()
    if name not in files:
        raise ConfigError(f"--paper {name}: no such table (shipped: {', '.join(sorted(files))})"
                          + did_you_mean(name, list(files)))
    return json.loads(files[name].read_text())
