"""Write files and folders so that a reader never sees half of one."""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _temp_sibling_name(path: Path) -> str:
    # keep the suffixes so libraries that choose a format by extension (nibabel: .nii.gz) work
    stem = path.name.split(".")[0]
    return f".{stem}.tmp{os.getpid()}-{secrets.token_hex(4)}" + "".join(path.suffixes)


@contextmanager
def _user_path_in_errors(tmp: Path, path: Path) -> Iterator[None]:
    """An OSError about the hidden temporary names the user's `path` instead."""
    try:
        yield
    except OSError as exc:
        if exc.filename is None or not str(exc.filename).startswith(str(tmp)):
            raise
        raise OSError(exc.errno, exc.strerror, str(path)) from None


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`, renamed onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(_temp_sibling_name(path))
    try:
        with _user_path_in_errors(tmp, path):
            yield tmp
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextmanager
def atomic_dir(path: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside `path`; it becomes `path` only if the block succeeds.

    With `overwrite`, an existing `path` is replaced (after the new content is complete).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp", dir=path.parent))
    try:
        with _user_path_in_errors(tmp, path):
            yield tmp
            if path.exists() and overwrite:
                old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old", dir=path.parent))
                os.replace(path, old / "x")
                os.replace(tmp, path)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, path)  # fails if path is a non-empty folder: never clobber
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
