"""Reading images, labels and cases: good files, every kind of bad file, grids, writing."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from contraseg.data.cases import CaseSpec, ImageRef
from contraseg.data.io import load_case, read_image, read_label, save_nifti
from contraseg.errors import ConfigError, InputError

SHAPE = (8, 7, 6)


def write(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, np.eye(4) if affine is None else affine), path)
    return path


def ramp(shape=SHAPE) -> np.ndarray:
    return np.arange(np.prod(shape), dtype=np.float32).reshape(shape)


def raises_one_line(path: Path, match: str, func, *args, **kwargs) -> str:
    with pytest.raises(InputError, match=match) as info:
        func(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(str(path))
    return message


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_case(tmp_path: Path, **overrides) -> CaseSpec:
    """A two-modality case on one grid, with a label; `overrides` replace files by modality."""
    images = {}
    for modality in ("t1", "t2"):
        data, affine = overrides.get(modality, (ramp(), np.eye(4)))
        images[modality] = ImageRef(write(tmp_path / f"{modality}.nii.gz", data, affine))
    label = np.zeros(SHAPE, dtype=np.uint8)
    label[2:5, 2:5, 2:4] = 2
    return CaseSpec("case1", images, label=write(tmp_path / "seg.nii.gz", label))


def test_read_image_scales_to_float32_and_keeps_geometry(tmp_path):
    affine = np.diag([0.9, 0.9, 5.5, 1.0])
    img = nib.Nifti1Image(np.arange(336, dtype=np.int16).reshape(SHAPE), affine)
    img.header.set_slope_inter(2.0, 10.0)
    path = tmp_path / "t1.nii.gz"
    nib.save(img, path)
    volume = read_image(path)
    assert volume.data.dtype == np.float32
    assert volume.data[0, 0, 1] == pytest.approx(12.0)
    np.testing.assert_allclose(volume.affine, affine)
    assert volume.zooms == pytest.approx((0.9, 0.9, 5.5))
    assert volume.path == path


def test_trailing_singleton_dimension_is_squeezed(tmp_path):
    path = write(tmp_path / "x.nii.gz", ramp()[..., None])
    assert read_image(path).shape == SHAPE


def test_4d_image_needs_a_volume_index(tmp_path):
    data = np.stack([ramp(), ramp() + 1000], axis=-1)
    path = write(tmp_path / "msd.nii.gz", data)
    message = raises_one_line(path, "4D image", read_image, path)
    assert "(8, 7, 6, 2)" in message
    np.testing.assert_array_equal(read_image(ImageRef(path, 1)).data, ramp() + 1000)
    assert read_image(path, expect_3d=False).shape == (8, 7, 6, 2)
    raises_one_line(path, "volume index 2 out of range", read_image, ImageRef(path, 2))


def test_missing_file(tmp_path):
    path = tmp_path / "nope.nii.gz"
    raises_one_line(path, "file not found", read_image, path)


@pytest.mark.parametrize(
    "content",
    [b"just some notes\nabout a case\n", b"\x89PNG\r\n\x1a\n" + bytes(200)],
    ids=["text", "png"],
)
@pytest.mark.parametrize("name", ["t1.nii.gz", "t1.nii"])
def test_file_that_is_not_nifti(tmp_path, content, name):
    path = tmp_path / name
    path.write_bytes(content)
    raises_one_line(path, "not a (readable )?NIfTI image", read_image, path)


def test_gzipped_garbage(tmp_path):
    path = tmp_path / "t1.nii.gz"
    path.write_bytes(gzip.compress(b"hello" * 100))
    raises_one_line(path, "NIfTI", read_image, path)


def test_truncated_gzip_is_reported_and_left_alone(tmp_path):
    rng = np.random.default_rng(0)
    path = write(tmp_path / "t1.nii.gz", rng.normal(size=(20, 20, 20)).astype(np.float32))
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    before = digest(path)
    raises_one_line(path, "truncated or corrupt image data", read_image, path)
    assert digest(path) == before


def test_truncated_uncompressed_file(tmp_path):
    path = write(tmp_path / "t1.nii", ramp((20, 20, 20)))
    path.write_bytes(path.read_bytes()[:2000])
    raises_one_line(path, "truncated or corrupt", read_image, path)


def test_nan_and_inf_voxels(tmp_path):
    data = ramp()
    data[0, 0, :3] = np.nan
    data[1, 1, 1] = np.inf
    path = write(tmp_path / "t1.nii.gz", data)
    raises_one_line(path, "3 NaN voxels and 1 inf voxels", read_image, path)


def test_label_with_integral_floats_becomes_integers(tmp_path):
    data = np.zeros(SHAPE, dtype=np.float32)
    data[1, 1, 1], data[2, 2, 2] = 1.0, 4.0
    label = read_label(write(tmp_path / "seg.nii.gz", data))
    assert label.data.dtype.kind == "u"
    assert sorted(np.unique(label.data)) == [0, 1, 4]


def test_label_with_non_integral_values(tmp_path):
    data = np.zeros(SHAPE, dtype=np.float32)
    data[1, 1, 1], data[2, 2, 2] = 0.5, 2.25
    path = write(tmp_path / "seg.nii.gz", data)
    raises_one_line(path, "non-integral values 0.5, 2.25 \\(2 voxels\\)", read_label, path)


def test_load_case_stacks_modalities(tmp_path):
    case = make_case(tmp_path)
    before = {p: digest(p) for p in tmp_path.iterdir()}
    loaded = load_case(case)
    assert loaded.image.shape == (2, *SHAPE) and loaded.image.dtype == np.float32
    assert loaded.modalities == ("t1", "t2")
    assert set(np.unique(loaded.label)) == {0, 2}
    assert loaded.brain_mask is None and loaded.reference == "t1"
    assert loaded.sources["label"].endswith("seg.nii.gz")
    assert {p: digest(p) for p in tmp_path.iterdir()} == before  # inputs never modified
    assert load_case(case, with_label=False).label is None


def test_shape_mismatch_names_the_differing_file(tmp_path):
    case = make_case(tmp_path, t2=(ramp((8, 7, 5)), np.eye(4)))
    t1, t2 = case.images["t1"].path, case.images["t2"].path
    message = raises_one_line(t2, "shape", load_case, case)
    assert f"shape (8, 7, 5) differs from {t1} (8, 7, 6)" in message
    assert "--resample-to" in message


def test_affine_mismatch_and_tolerance(tmp_path):
    shifted = np.eye(4)
    shifted[0, 3] = 0.5
    case = make_case(tmp_path, t2=(ramp(), shifted))
    message = raises_one_line(case.images["t2"].path, "affine differs", load_case, case)
    assert "by up to 0.5" in message and "origin" in message
    assert load_case(case, atol=0.6).image.shape == (2, *SHAPE)

    tiny = np.eye(4)
    tiny[1, 3] = 1e-4
    assert load_case(make_case(tmp_path / "b", t2=(ramp(), tiny))).shape == SHAPE


def test_orientation_mismatch_is_described(tmp_path):
    flipped = np.diag([-1.0, 1.0, 1.0, 1.0])
    case = make_case(tmp_path, t2=(ramp(), flipped))
    raises_one_line(case.images["t2"].path, "orientation LAS vs RAS", load_case, case)


def test_label_on_another_grid_is_reported(tmp_path):
    case = make_case(tmp_path)
    write(case.label, np.zeros((8, 7, 4), dtype=np.uint8))
    raises_one_line(case.label, "shape", load_case, case)


def test_missing_modality(tmp_path):
    case = make_case(tmp_path)
    expected = tmp_path / "flair.nii.gz"
    case.missing["flair"] = expected
    raises_one_line(expected, "missing flair image for case case1", load_case, case)


def test_resample_to_unknown_modality(tmp_path):
    with pytest.raises(ConfigError, match="flair"):
        load_case(make_case(tmp_path), resample_to="flair")


def test_resample_onto_reference_grid_uses_world_coordinates(tmp_path):
    # t2 covers x = 2..9 mm at 1 mm, stored as a larger 10-voxel grid; values = world x + 1
    shifted = np.eye(4)
    shifted[0, 3] = 2.0
    world_x = (np.arange(10, dtype=np.float32) + 2.0)[:, None, None]
    t2 = np.broadcast_to(world_x + 1, (10, 7, 6)).copy()
    case = make_case(tmp_path, t2=(t2, shifted))
    loaded = load_case(case, resample_to="t1")
    assert loaded.resampled == ("t2",) and loaded.shape == SHAPE
    np.testing.assert_allclose(loaded.image[1, 2:, 3, 3], np.arange(2, 8) + 1)
    np.testing.assert_array_equal(loaded.image[1, :2], 0)  # outside t2's field of view
    np.testing.assert_array_equal(loaded.image[0], ramp())  # the reference is untouched


def test_brain_mask_stored_just_below_one(tmp_path):
    case = make_case(tmp_path)
    mask = np.zeros(SHAPE)
    mask[1:6, 1:6, 1:5] = 0.99999997
    case.brain_mask = write(tmp_path / "mask.nii.gz", mask)
    loaded = load_case(case)
    assert loaded.brain_mask.dtype == bool and loaded.brain_mask.sum() == 100


def test_save_nifti_keeps_codes_and_sets_dtype(tmp_path):
    affine = np.array([[-0.9, 0, 0, 90], [0, 0.9, 0, -70], [0, 0, 5.5, -40], [0, 0, 0, 1]])
    ref = nib.Nifti1Image(ramp(), affine)
    ref.set_qform(affine, code=1)
    ref.set_sform(affine, code=4)
    out = tmp_path / "out" / "pred.nii.gz"
    save_nifti(np.ones(SHAPE, dtype=np.int64), affine, out, header=ref.header, dtype=np.uint8)
    img = nib.load(out)
    assert img.get_data_dtype() == np.uint8
    assert int(img.header["qform_code"]) == 1 and int(img.header["sform_code"]) == 4
    np.testing.assert_allclose(img.affine, affine, atol=1e-5)
    assert sorted(p.name for p in out.parent.iterdir()) == ["pred.nii.gz"]  # no temp left over
    save_nifti(np.ones(SHAPE, dtype=bool), affine, out)
    assert nib.load(out).get_data_dtype() == np.uint8


@pytest.mark.realdata
def test_clinical_scans_of_different_sizes(shared_data):
    folder = shared_data / "real" / "clinical-raw" / "TCGA-FG-6692"
    order = ("t1", "t1c", "t2", "flair")
    case = CaseSpec("TCGA-FG-6692", {m: ImageRef(folder / f"{m}.nii.gz") for m in order})
    message = raises_one_line(folder / "t2.nii.gz", "shape", load_case, case)
    assert f"(224, 256, 26) differs from {folder / 't1.nii.gz'} (256, 224, 26)" in message
    loaded = load_case(case, resample_to="t1")
    assert loaded.image.shape == (4, 256, 224, 26)
    assert set(loaded.resampled) == {"t2", "flair"}
    np.testing.assert_allclose(loaded.affine, nib.load(folder / "t1.nii.gz").affine)
    assert (loaded.image[2] > 0).mean() > 0.5  # t2 really landed in the field of view


def test_a_label_map_given_as_an_image_is_refused(tmp_path):
    """A mask or label map where an image belongs is named; an all-zero stand-in for a missing
    scan, and an image with many values, are read."""
    labels = np.zeros((12, 10, 8), np.uint8)
    labels[2:5, 2:5, 2:5] = 2
    labels[3, 3, 3] = 4
    path = tmp_path / "case-seg.nii.gz"
    nib.save(nib.Nifti1Image(labels, np.eye(4)), path)
    with pytest.raises(InputError, match="case-seg.nii.gz: has only the values 0, 2, 4: this "
                                         "looks like a label map, not an image"):
        read_image(path)
    zeros, noise = tmp_path / "zeros.nii.gz", tmp_path / "noise.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((12, 10, 8), np.float32), np.eye(4)), zeros)
    values = np.random.default_rng(0).integers(0, 50, (12, 10, 8)).astype(np.int16)
    nib.save(nib.Nifti1Image(values, np.eye(4)), noise)
    assert read_image(zeros).data.max() == 0 and read_image(noise).data.max() == 49
