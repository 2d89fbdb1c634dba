"""Wording shared by error messages."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def close_match(word: str, choices: Iterable[str]) -> str | None:
    """The choice `word` is a near miss of (case-insensitive: "flari" -> "flair"), or None."""
    lowered = {choice.lower(): choice for choice in choices}
    match = difflib.get_close_matches(word.lower(), list(lowered), n=1, cutoff=0.6)
    return lowered[match[0]] if match else None


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """"; did you mean 'flair'?" when `word` is a near miss of one of `choices`, else ""."""
    match = close_match(word, choices)
    return f"; did you mean '{match}'?" if match else ""
