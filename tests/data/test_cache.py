"""The preprocessed-case cache: hits, misses after changes, and no partial entries."""

from __future__ import annotations

import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

import contraseg.data.cache as cache_module
from contraseg.data.cache import CaseCache, key_for
from contraseg.data.cases import CaseSpec, ImageRef
from contraseg.data.preprocess import PreprocessSettings
from contraseg.errors import InputError

SHAPE = (12, 10, 8)


def write(path: Path, data: np.ndarray) -> Path:
    nib.save(nib.Nifti1Image(data, np.diag([-1.0, -1.0, 1.0, 1.0])), path)
    return path


def make_case(folder: Path, with_label: bool = True) -> CaseSpec:
    folder.mkdir(parents=True, exist_ok=True)
    image = np.zeros(SHAPE, dtype=np.float32)
    image[2:10, 2:8, 2:6] = np.random.default_rng(0).normal(50, 5, size=(8, 6, 4))
    images = {m: ImageRef(write(folder / f"{m}.nii.gz", image + i)) for i, m in enumerate("ab")}
    label = None
    if with_label:
        seg = np.zeros(SHAPE, dtype=np.uint8)
        seg[4:7, 3:6, 3:5] = 1
        label = write(folder / "seg.nii.gz", seg)
    return CaseSpec("case/01", images, label=label)


@pytest.fixture
def count_preprocess(monkeypatch):
    """Counts real computations (calls of preprocess) made by the cache."""
    calls = []
    real = cache_module.preprocess

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(cache_module, "preprocess", counting)
    return calls


def entries(cache_dir: Path) -> list[str]:
    return sorted(p.name for p in cache_dir.iterdir()) if cache_dir.exists() else []


def test_miss_then_hit(tmp_path, count_preprocess):
    case, settings = make_case(tmp_path / "in"), PreprocessSettings()
    cache = CaseCache(tmp_path / "cache")
    first = cache.load_or_compute(case, settings)
    key = cache.key_for(case, settings)
    assert entries(tmp_path / "cache") == [f"case_01-{key[:16]}"]
    entry = tmp_path / "cache" / f"case_01-{key[:16]}"
    assert entries(entry) == ["image.npy", "label.npy", "mask.npy", "record.json"]
    assert json.loads((entry / "record.json").read_text())["case_id"] == "case/01"
    second = cache.load_or_compute(case, settings)
    assert len(count_preprocess) == 1
    np.testing.assert_array_equal(second.image, first.image)
    np.testing.assert_array_equal(second.label, first.label)
    np.testing.assert_array_equal(second.brain_mask, first.brain_mask)
    assert second.label.dtype == first.label.dtype and second.modalities == ("a", "b")
    assert second.record.to_dict() == first.record.to_dict()


def test_memory_mapped_hit(tmp_path):
    case, settings = make_case(tmp_path / "in"), PreprocessSettings()
    CaseCache(tmp_path / "cache").load_or_compute(case, settings)
    hit = CaseCache(tmp_path / "cache", mmap_mode="r").load_or_compute(case, settings)
    assert isinstance(hit.image, np.memmap)


def test_case_without_label(tmp_path, count_preprocess):
    case, settings = make_case(tmp_path / "in", with_label=False), PreprocessSettings()
    cache = CaseCache(tmp_path / "cache")
    cache.load_or_compute(case, settings)
    assert cache.load_or_compute(case, settings).label is None
    assert len(count_preprocess) == 1


def test_touched_or_rewritten_input_gives_a_new_key(tmp_path, count_preprocess):
    case, settings = make_case(tmp_path / "in"), PreprocessSettings()
    cache = CaseCache(tmp_path / "cache")
    cache.load_or_compute(case, settings)
    key = cache.key_for(case, settings)
    path = case.images["b"].path
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert cache.key_for(case, settings) != key
    cache.load_or_compute(case, settings)
    assert len(count_preprocess) == 2 and len(entries(tmp_path / "cache")) == 2


def test_content_hash_sees_a_rewrite_with_the_same_size_and_time(tmp_path):
    case, settings = make_case(tmp_path / "in"), PreprocessSettings()
    path = case.label
    stat = path.stat()
    plain, hashed = key_for(case, settings), key_for(case, settings, content_hash=True)
    data = np.asanyarray(nib.load(path).dataobj).copy()
    data[5, 4, 3] = 2
    write(path, data)
    path.write_bytes(path.read_bytes()[: stat.st_size].ljust(stat.st_size, b"\0"))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert key_for(case, settings) == plain  # size and mtime alone cannot tell
    assert key_for(case, settings, content_hash=True) != hashed


def test_settings_and_resample_to_are_part_of_the_key(tmp_path):
    case = make_case(tmp_path / "in")
    keys = {
        key_for(case, PreprocessSettings()),
        key_for(case, PreprocessSettings(crop_margin=4)),
        key_for(case, PreprocessSettings(target_spacing=(2.0, 2.0, 2.0))),
        key_for(case, PreprocessSettings(version="2")),
        key_for(case, PreprocessSettings(), resample_to="a"),
    }
    assert len(keys) == 5
    assert key_for(case, PreprocessSettings()) == key_for(case, PreprocessSettings())


def test_failed_compute_leaves_no_entry(tmp_path):
    case = make_case(tmp_path / "in")
    case.images["b"].path.write_text("not an image")
    cache = CaseCache(tmp_path / "cache")
    with pytest.raises(InputError):
        cache.load_or_compute(case, PreprocessSettings())
    assert entries(tmp_path / "cache") == []


def test_failed_write_leaves_no_partial_entry(tmp_path, monkeypatch):
    case, settings = make_case(tmp_path / "in"), PreprocessSettings()
    real_save = np.save

    def save_then_fail(file, array, **kwargs):
        if Path(file).name == "label.npy":
            raise OSError("disk full")
        real_save(file, array, **kwargs)

    monkeypatch.setattr(np, "save", save_then_fail)
    cache = CaseCache(tmp_path / "cache")
    with pytest.raises(OSError, match="disk full"):
        cache.load_or_compute(case, settings)
    assert entries(tmp_path / "cache") == []  # neither the entry nor its temporary folder
    monkeypatch.setattr(np, "save", real_save)
    assert cache.load_or_compute(case, settings).label is not None


def test_damaged_entry_is_recomputed(tmp_path, count_preprocess):
    case, settings = make_case(tmp_path / "in"), PreprocessSettings()
    cache = CaseCache(tmp_path / "cache")
    cache.load_or_compute(case, settings)
    entry = cache.entry_dir(case, settings)
    (entry / "image.npy").write_bytes(b"garbage")
    assert cache.load_or_compute(case, settings).image.ndim == 4
    assert len(count_preprocess) == 2
    assert entries(tmp_path / "cache") == [entry.name]


def test_ensure_computes_once_and_returns_the_entry(tmp_path, count_preprocess):
    case, settings = make_case(tmp_path / "in"), PreprocessSettings()
    cache = CaseCache(tmp_path / "cache")
    entry = cache.ensure(case, settings)
    assert entry == cache.entry_dir(case, settings) and (entry / "record.json").is_file()
    assert cache.ensure(case, settings) == entry and len(count_preprocess) == 1
    (entry / "image.npy").write_bytes(b"damaged")
    assert cache.ensure(case, settings) == entry and len(count_preprocess) == 2
    assert np.load(entry / "image.npy").shape[0] == 2


def test_float16_storage_has_its_own_key_and_type(tmp_path):
    case, settings = make_case(tmp_path / "in"), PreprocessSettings()
    full, half = CaseCache(tmp_path / "cache"), CaseCache(tmp_path / "cache", image_dtype="float16")
    assert full.key_for(case, settings) == key_for(case, settings)  # float32 keys unchanged
    assert half.key_for(case, settings) != full.key_for(case, settings)
    computed = half.load_or_compute(case, settings)
    assert computed.image.dtype == np.float16  # a miss returns what a hit will read
    hit = half.load_or_compute(case, settings)
    np.testing.assert_array_equal(hit.image, computed.image)
    reference = full.load_or_compute(case, settings).image
    np.testing.assert_allclose(hit.image.astype(np.float32), reference, rtol=1e-3, atol=1e-3)
    with pytest.raises(ValueError, match="image_dtype"):
        CaseCache(tmp_path / "cache", image_dtype="int8")


def test_a_late_store_never_replaces_an_entry_another_process_stored(tmp_path):
    """Two DDP ranks miss together; the one that stores second must not swap the folder the
    first is already training from (its foreground file would vanish mid-run)."""
    case, settings = make_case(tmp_path / "in"), PreprocessSettings()
    cache = CaseCache(tmp_path / "cache")
    entry = cache.ensure(case, settings)
    (entry / "foreground-x.npy").write_bytes(b"kept")
    inode = entry.stat().st_ino
    cache._compute(entry, case, settings, None)  # the slower rank's own result
    assert entry.stat().st_ino == inode and (entry / "foreground-x.npy").is_file()
    (entry / "label.npy").write_bytes(b"damaged")  # a damaged entry is still replaced
    cache._compute(entry, case, settings, None)
    assert not (entry / "foreground-x.npy").exists() and np.load(entry / "label.npy").any()
