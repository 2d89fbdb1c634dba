"""Atomic writes: a failure names the user's path, never the hidden temporary one."""

from __future__ import annotations

import pytest

from contraseg.utils.fs import atomic_dir, atomic_path


def test_an_error_inside_an_atomic_file_names_the_users_path(tmp_path):
    target = tmp_path / "seg.nii.gz"
    with pytest.raises(OSError) as error, atomic_path(target) as tmp:
        (tmp / "below-a-file").write_text("x")  # tmp does not exist: no such folder
    assert error.value.filename == str(target) and ".tmp" not in str(error.value)
    assert list(tmp_path.iterdir()) == []  # nothing half-written


def test_a_folder_that_would_be_clobbered_is_named(tmp_path):
    report = tmp_path / "report"
    report.mkdir()
    (report / "keep.txt").write_text("mine")
    with pytest.raises(OSError) as error, atomic_dir(report) as tmp:
        (tmp / "metrics.csv").write_text("new")
    assert error.value.filename == str(report)
    assert [p.name for p in tmp_path.iterdir()] == ["report"]
    assert (report / "keep.txt").read_text() == "mine"
