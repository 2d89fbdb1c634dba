"""Training cases read from the disk cache a patch at a time: the same patches, labels and
foreground as the same case in memory, float16 storage, and no mapping left open."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from contraseg.data.cache import CaseCache
from contraseg.data.layouts import discover
from contraseg.data.patches import PatchSampler, build_augmentation
from contraseg.data.preprocess import PreprocessSettings
from contraseg.data.train_case import (
    DiskCase,
    TrainCase,
    foreground_coords,
    read_patch,
    to_train_case,
)
from contraseg.engine.config import AugmentConfig
from contraseg.engine.prepare import add_case_inputs

# the run's modality list holds one the cases lack: its channel must stay zero
MODALITIES = ("t1", "t1c", "t2", "flair", "adc")


@pytest.fixture(scope="module")
def dataset(make_phantom) -> tuple[Path, object]:
    root = make_phantom(cases=2, size=32, seed=5)
    return root, discover(root)


def disk_and_memory(spec, cache_dir: Path, dtype: str = "float32"
                    ) -> list[tuple[DiskCase, TrainCase]]:
    """Each case on disk (DiskCase) and the same case built in memory from the cache's arrays,
    the way training held cases before (union layout, canonical label, foreground subset)."""
    cache, settings = CaseCache(cache_dir, image_dtype=dtype), PreprocessSettings()
    pairs = []
    for case in spec.cases:
        disk = to_train_case(case, spec, MODALITIES, cache, settings, seed=3)
        prep = cache.load_or_compute(case.present_only(), settings)
        image = np.zeros((len(MODALITIES), *prep.image.shape[1:]), np.float32)
        for channel, name in enumerate(prep.modalities):
            image[MODALITIES.index(name)] = prep.image[channel]
        label = spec.convention.to_canonical(np.asarray(prep.label))
        present = np.array([m in prep.modalities for m in MODALITIES])
        pairs.append((disk, TrainCase(case.case_id, image, label, present,
                                      foreground_coords(label, 3))))
    return pairs


def test_disk_patches_equal_the_case_in_memory(dataset, tmp_path):
    root, spec = dataset
    rng = np.random.default_rng(0)
    for disk, memory in disk_and_memory(spec, tmp_path / "cache"):
        assert disk.shape == memory.shape and disk.n_foreground == memory.n_foreground > 0
        np.testing.assert_array_equal(disk.present, memory.present)
        assert not disk.present[MODALITIES.index("adc")]
        np.testing.assert_array_equal(disk.image, memory.image)
        np.testing.assert_array_equal(disk.label, memory.label)
        assert set(np.unique(disk.label)) <= {0, 1, 2, 3}  # canonical, not BraTS's raw 4
        for i in rng.integers(disk.n_foreground, size=5):
            np.testing.assert_array_equal(disk.foreground_voxel(i), memory.foreground_voxel(i))
        # windows inside the volume, and one longer than an axis (centred with zeros)
        for patch in ((8, 12, 10), (40, 8, 8)):
            upper = np.maximum(np.array(disk.shape) - patch, 0)
            for _ in range(4):
                start = [int(rng.integers(n + 1)) for n in upper]
                image = disk.image_patch(start, patch)
                assert image.dtype == np.float32 and image.shape == (5, *patch)
                np.testing.assert_array_equal(image, memory.image_patch(start, patch))
                np.testing.assert_array_equal(disk.label_patch(start, patch),
                                              memory.label_patch(start, patch))


def test_sampled_batches_from_disk_equal_those_from_memory(dataset, tmp_path):
    """The sampler draws the same augmented batches from either kind of case (so runs on the
    disk cache reproduce the earlier in-memory ones)."""
    _, spec = dataset
    pairs = disk_and_memory(spec, tmp_path / "cache")
    augment = AugmentConfig(rotate_prob=1.0, scale_prob=1.0, shift_prob=1.0)
    samplers = [PatchSampler([pair[i] for pair in pairs], (16, 16, 16), 0.5, True,
                             build_augmentation(augment, "3d")) for i in (0, 1)]
    for seed in range(3):
        disk, memory = (s.sample(np.random.default_rng(seed), 2) for s in samplers)
        assert disk.keys() == memory.keys()
        for key in disk:
            np.testing.assert_array_equal(disk[key], memory[key])


def test_foreground_is_computed_once_and_kept_in_the_entry(dataset, tmp_path, monkeypatch):
    _, spec = dataset
    cache, settings = CaseCache(tmp_path / "cache"), PreprocessSettings()
    first = to_train_case(spec.cases[0], spec, MODALITIES, cache, settings, seed=3)
    stored = list(first.entry.glob("foreground-*.npy"))
    assert len(stored) == 1
    monkeypatch.setattr("contraseg.data.train_case.foreground_coords",
                        lambda *a: pytest.fail("foreground recomputed"))
    again = to_train_case(spec.cases[0], spec, MODALITIES, cache, settings, seed=3)
    assert again.n_foreground == first.n_foreground
    # another seed subsets differently only above the cap; it has its own file either way
    monkeypatch.undo()
    to_train_case(spec.cases[0], spec, MODALITIES, cache, settings, seed=4)
    assert len(list(first.entry.glob("foreground-*.npy"))) == 2


def test_float16_cache_halves_the_image_and_patches_stay_float32(dataset, tmp_path):
    _, spec = dataset
    full = disk_and_memory(spec, tmp_path / "c32")
    half = disk_and_memory(spec, tmp_path / "c16", dtype="float16")
    for (disk32, _), (disk16, _) in zip(full, half, strict=True):
        assert disk16.entry != disk32.entry  # another key: never mixed up with float32
        stored = np.load(disk16.entry / "image.npy", mmap_mode="r")
        assert stored.dtype == np.float16
        size32 = (disk32.entry / "image.npy").stat().st_size
        assert (disk16.entry / "image.npy").stat().st_size < 0.51 * size32
        patch = disk16.image_patch((0, 0, 0), (16, 16, 16))
        assert patch.dtype == np.float32
        reference = disk32.image_patch((0, 0, 0), (16, 16, 16))
        np.testing.assert_allclose(patch, reference, rtol=1e-3, atol=1e-3)
        assert not np.array_equal(patch, reference)  # really stored at half precision
        np.testing.assert_array_equal(disk16.label, disk32.label)


def test_patches_leave_no_mapping_open(dataset, tmp_path):
    """Each patch maps the file and unmaps it: nothing of the cache stays in the process's
    address space (so its resident memory cannot fill with pages of past patches)."""
    _, spec = dataset
    disk = disk_and_memory(spec, tmp_path / "cache")[0][0]
    for start in ((0, 0, 0), (4, 4, 4)):
        disk.image_patch(start, (8, 8, 8))
        disk.label_patch(start, (8, 8, 8))
        disk.foreground_voxel(0)
    maps = Path("/proc/self/maps")
    if not maps.is_file():
        pytest.skip("no /proc/self/maps on this system")
    assert str(disk.entry) not in maps.read_text()


def test_read_patch_refuses_a_window_outside_the_volume(tmp_path):
    np.save(tmp_path / "a.npy", np.zeros((2, 10, 10, 10), np.float32))
    with pytest.raises(ValueError, match="does not fit"):
        read_patch(tmp_path / "a.npy", (5, 0, 0), (8, 8, 8))


class _CaseInputs(torch.nn.Module):
    """A stand-in for a method with per-case inputs (CLFC's pseudo-normals): twice the image."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(1))

    def case_inputs_fingerprint(self) -> str:
        return "twice"

    def case_inputs(self, image, present):
        return image * 2


def test_case_inputs_of_disk_cases_are_read_back_without_reading_the_images(
        dataset, tmp_path, monkeypatch):
    """A second run finds each case's inputs by its cache entry: it reads no image, and gets
    the values computed from that case (the in-memory case, keyed by its array, agrees)."""
    _, spec = dataset
    pairs = disk_and_memory(spec, tmp_path / "cache")
    method = _CaseInputs()
    add_case_inputs(method, [disk for disk, _ in pairs], tmp_path / "cache")
    files = sorted((tmp_path / "cache" / "case-inputs").glob("*.npy"))
    assert len(files) == len(pairs)

    def no_read(self):
        raise AssertionError(f"{self.case_id}: the image was read")

    monkeypatch.setattr(DiskCase, "image", property(no_read))
    again = disk_and_memory(spec, tmp_path / "cache")
    add_case_inputs(method, [disk for disk, _ in again], tmp_path / "cache")
    assert sorted((tmp_path / "cache" / "case-inputs").glob("*.npy")) == files
    monkeypatch.undo()
    for disk, memory in again:
        assert disk.case_inputs in files
        np.testing.assert_array_equal(np.load(disk.case_inputs), 2 * memory.image)
    memory_cases = [memory for _, memory in again]
    add_case_inputs(method, memory_cases, tmp_path / "cache")
    for memory in memory_cases:
        np.testing.assert_array_equal(memory.case_inputs, 2 * memory.image)
