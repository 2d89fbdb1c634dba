"""Inference: window stitching, subsets per encoder pass, flip TTA, the ET rule, and prediction
from files and folders with a run saved in the test."""

from __future__ import annotations

import hashlib
import math
from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from contraseg.data.labels import get_convention
from contraseg.data.preprocess import PreprocessSettings
from contraseg.engine.checkpoint import save_checkpoint
from contraseg.engine.config import InferConfig, load_config
from contraseg.engine.et_rule import et_rule_threshold, has_enhancing_class, postprocess_et
from contraseg.engine.predictor import Predictor
from contraseg.engine.sliding_window import (
    flip_combinations,
    sliding_window_outputs,
    sliding_window_probabilities,
    window_size,
)
from contraseg.errors import InputError
from contraseg.models.base import Method, mask_missing
from contraseg.models.registry import build_method

MODALITIES = ("t1", "t1c", "t2", "flair")
ALL_SUBSETS = torch.tensor([[bool(k >> i & 1) for i in range(4)] for k in range(1, 16)])


class Pointwise(Method):
    """logits = W x_available + b voxel by voxel: position-independent and flip-equivariant.

    Counts `encode` calls and the availability rows of each `decode` call."""

    def __init__(self, num_modalities: int = 4, num_classes: int = 3, size_divisor: int = 1):
        super().__init__(MODALITIES[:num_modalities], num_classes)
        self.conv = nn.Conv3d(num_modalities, num_classes, 1)
        self.size_divisor = size_divisor
        self.encode_calls = 0
        self.decode_rows: list[int] = []

    def forward(self, images: Tensor, available: Tensor) -> Tensor:
        return self.conv(mask_missing(images, available))

    def encode(self, images: Tensor) -> object:
        self.encode_calls += 1
        return images

    def decode(self, encoded: object, available: Tensor) -> Tensor:
        self.decode_rows.append(int(available.shape[0]))
        return self(encoded, available)


class ForwardDifference(Method):
    """Two classes: logits (0, x[i+1] - x[i]) along the first spatial axis (0 at the last
    voxel). Not flip-equivariant: flipped, it computes the backward difference x[i-1] - x[i]."""

    def __init__(self):
        super().__init__(("t1",), 2)
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, images: Tensor, available: Tensor) -> Tensor:
        x = mask_missing(images, available) * self.scale
        diff = torch.cat([x[:, :, 1:], x[:, :, -1:]], dim=2) - x
        return torch.cat([torch.zeros_like(diff), diff], dim=1)


def _cfg(**values) -> InferConfig:
    return replace(InferConfig(), **values)


def _tiny_unet() -> Method:
    torch.manual_seed(0)
    return build_method("unet", MODALITIES, 4, {"base_channels": 4, "depth": 3})


# --- sliding window ------------------------------------------------------------------------------


@pytest.mark.parametrize("overlap", [0.0, 0.25, 0.5, 0.7])
@pytest.mark.parametrize("blend", ["constant", "gaussian"])
def test_stitched_windows_equal_the_whole_image(overlap: float, blend: str) -> None:
    torch.manual_seed(1)
    method = Pointwise()
    image = torch.randn(1, 4, 15, 11, 19)
    rows = ALL_SUBSETS[[0, 6, 14]]
    cfg = _cfg(overlap=overlap, blend=blend, sw_batch_size=3, subset_chunk=2)
    out = sliding_window_outputs(method, image, rows, cfg, (8, 8, 8))
    assert out.shape == (3, 3, 15, 11, 19)
    with torch.no_grad():
        whole = torch.cat([method(image, row[None]) for row in rows])
    torch.testing.assert_close(out, whole, atol=1e-5, rtol=1e-5)


class WindowMean(Method):
    """Two classes: logits (0, mean of the window / 4) everywhere in the window, so two
    overlapping windows disagree and the blending space shows."""

    def __init__(self):
        super().__init__(("t1",), 2)

    def forward(self, images: Tensor, available: Tensor) -> Tensor:
        mean = mask_missing(images, available).mean(dim=(1, 2, 3, 4), keepdim=True) / 4
        return torch.cat([torch.zeros_like(images), mean.expand_as(images)], dim=1)


def test_blending_probabilities_averages_each_windows_softmax() -> None:
    image = torch.arange(12.0).reshape(1, 1, 12, 1, 1).expand(1, 1, 12, 4, 4).contiguous()
    # windows x = 0..7 and 4..11 (overlap 0.5 of 8): window means 3.5 and 7.5
    first, second = torch.sigmoid(torch.tensor(3.5 / 4)), torch.sigmoid(torch.tensor(7.5 / 4))
    rows = torch.ones(1, 1, dtype=torch.bool)
    cfg = _cfg(overlap=0.5, blend="constant", sw_batch_size=1)
    logits = sliding_window_probabilities(WindowMean(), image, rows, cfg, (8, 4, 4))[0, 1]
    probs = sliding_window_probabilities(WindowMean(), image, rows,
                                         replace(cfg, blend_space="probabilities"), (8, 4, 4))
    probs = probs[0, 1]
    for blended, overlap_value in ((logits, torch.sigmoid(torch.tensor(5.5 / 4))),
                                   (probs, (first + second) / 2)):
        torch.testing.assert_close(blended[:4], first.expand(4, 4, 4))
        torch.testing.assert_close(blended[4:8], overlap_value.expand(4, 4, 4))
        torch.testing.assert_close(blended[8:], second.expand(4, 4, 4))


def test_image_smaller_than_roi_and_size_divisor() -> None:
    torch.manual_seed(2)
    method = Pointwise(size_divisor=4)
    assert window_size(method, (6, 9, 8)) == (8, 12, 8)
    image = torch.randn(1, 4, 5, 13, 7)
    out = sliding_window_outputs(method, image, ALL_SUBSETS[-1:], _cfg(), (6, 9, 8))
    with torch.no_grad():
        whole = method(image, ALL_SUBSETS[-1:])
    torch.testing.assert_close(out, whole, atol=1e-5, rtol=1e-5)


def test_unet_padding_and_fifteen_subsets_match_single_runs() -> None:
    """A 13x10x7 image in one 16^3 window: MONAI pads (half before), crops back; the 15 subsets
    decoded in one batch equal 15 separate runs of the network on the padded image."""
    method = _tiny_unet().eval()
    image = torch.randn(1, 4, 13, 10, 7)
    out = sliding_window_outputs(method, image, ALL_SUBSETS, _cfg(subset_chunk=15), (16, 16, 16))
    assert out.shape == (15, 4, 13, 10, 7)
    pads = [(d // 2, d - d // 2) for d in (16 - 7, 16 - 10, 16 - 13)]
    padded = F.pad(image, [p for pair in pads for p in pair])
    with torch.no_grad():
        for k, row in enumerate(ALL_SUBSETS):
            ref = method(padded, row[None])[0, :, 1:14, 3:13, 4:11]  # pads 1/2, 3/3, 4/5
            torch.testing.assert_close(out[k], ref, atol=1e-4, rtol=1e-4)


def test_training_mode_is_restored() -> None:
    method = _tiny_unet().train()
    sliding_window_outputs(method, torch.randn(1, 4, 8, 8, 8), ALL_SUBSETS[:1], _cfg(), (8, 8, 8))
    assert method.training


@pytest.mark.parametrize(("chunk", "sw_batch", "rows_per_call"), [
    (1, 1, [1] * 15), (15, 1, [15]), (4, 1, [4, 4, 4, 3]), (15, 4, None),
])
def test_encode_once_per_window_whatever_the_subsets(chunk, sw_batch, rows_per_call) -> None:
    method = Pointwise()
    image = torch.randn(1, 4, 32, 32, 32)
    cfg = _cfg(overlap=0.5, subset_chunk=chunk, sw_batch_size=sw_batch)
    sliding_window_outputs(method, image, ALL_SUBSETS, cfg, (16, 16, 16))
    windows = 3**3  # starts 0, 8, 16 per axis
    batches = math.ceil(windows / sw_batch)
    assert method.encode_calls == batches
    assert sum(method.decode_rows) == 15 * windows
    if rows_per_call is not None:
        assert method.decode_rows == rows_per_call * windows


# --- flip TTA ------------------------------------------------------------------------------------


def test_flip_combinations_are_the_eight_mirrorings() -> None:
    combos = flip_combinations(3)
    assert len(combos) == 8 and len(set(combos)) == 8
    assert () in combos and (2, 3, 4) in combos


def test_tta_leaves_a_flip_equivariant_method_unchanged() -> None:
    method = Pointwise()
    image = torch.randn(1, 4, 12, 9, 10)
    plain = sliding_window_probabilities(method, image, ALL_SUBSETS[:3], _cfg(), (8, 8, 8))
    tta = sliding_window_probabilities(method, image, ALL_SUBSETS[:3], _cfg(tta_flips=True),
                                       (8, 8, 8))
    torch.testing.assert_close(tta, plain, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(plain.sum(1), torch.ones(3, 12, 9, 10))


def test_tta_averages_the_flipped_back_probabilities() -> None:
    """Mirrored along the first axis the forward difference becomes the backward difference;
    the other axes change nothing: TTA = (sigmoid(fwd) + sigmoid(bwd)) / 2."""
    x = np.random.default_rng(3).normal(size=(7, 6, 5)).astype(np.float32)
    image = torch.from_numpy(x)[None, None]
    available = torch.ones(1, 1, dtype=torch.bool)
    args = (ForwardDifference(), image, available)
    plain = sliding_window_probabilities(*args, _cfg(), (7, 6, 5))[0, 1].numpy()
    tta = sliding_window_probabilities(*args, _cfg(tta_flips=True), (7, 6, 5))[0, 1].numpy()
    fwd = np.concatenate([x[1:], x[-1:]]) - x
    bwd = np.concatenate([x[:1], x[:-1]]) - x
    sigmoid = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    np.testing.assert_allclose(plain, sigmoid(fwd), atol=1e-6)
    np.testing.assert_allclose(tta, (sigmoid(fwd) + sigmoid(bwd)) / 2, atol=1e-6)
    assert np.abs(tta - plain).max() > 0.05


def test_bf16_autocast_runs_close_to_float32() -> None:
    method = _tiny_unet()
    image = torch.randn(1, 4, 16, 16, 16)
    full = sliding_window_outputs(method, image, ALL_SUBSETS[-1:], _cfg(), (16, 16, 16))
    half = sliding_window_outputs(method, image, ALL_SUBSETS[-1:], _cfg(), (16, 16, 16),
                                 bf16=True)
    assert half.dtype == torch.float32
    assert (half - full).abs().max() < 0.1 * full.abs().max()


# --- ET rule -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("et_voxels", "relabelled"), [(499, True), (500, False)])
def test_postprocess_et_boundary(et_voxels: int, relabelled: bool) -> None:
    labels = np.zeros((10, 10, 10), dtype=np.uint8)
    flat = labels.reshape(-1)
    flat[:et_voxels] = 3
    flat[et_voxels:et_voxels + 100] = 1
    flat[et_voxels + 100:et_voxels + 300] = 2
    out = postprocess_et(labels, 500)
    tc_before, tc_after = np.isin(labels, (1, 3)), np.isin(out, (1, 3))
    np.testing.assert_array_equal(tc_after, tc_before)
    np.testing.assert_array_equal(out == 2, labels == 2)
    assert int((out == 3).sum()) == (0 if relabelled else et_voxels)
    assert int((labels == 3).sum()) == et_voxels  # the input is not modified
    assert postprocess_et(labels, 0) is labels


def test_et_rule_applies_to_brain_conventions_only() -> None:
    assert has_enhancing_class(get_convention("brats2020"))
    assert has_enhancing_class(get_convention("msd"))
    assert not has_enhancing_class(get_convention({"name": "wmh", "raw_to_class": {"1": 1},
                                                   "class_names": ["background", "lesion"],
                                                   "regions": {"LESION": [1]}}))


# --- prediction from files and folders -----------------------------------------------------------

LPS = np.array([[-1.2, 0, 0, 40.0], [0, -1.0, 0, 30.0], [0, 0, 1.5, -12.0], [0, 0, 0, 1]])
SHAPE = (21, 18, 11)  # not a multiple of the 16^3 ROI


def _make_run(tmp_path: Path, convention: str = "brats2023", favour: int | None = None) -> Path:
    """A tiny unet run; with `favour`, the output layer predicts that class everywhere."""
    method = _tiny_unet()
    state = method.state_dict()
    if favour is not None:
        state["net.output_block.conv.conv.weight"].zero_()
        state["net.output_block.conv.conv.bias"].copy_(10.0 * F.one_hot(torch.tensor(favour), 4))
    run = tmp_path / f"run-{convention}-{favour}"
    save_checkpoint(run / "checkpoints" / "best.pt", {
        "method": "unet", "config": load_config("unet", "tiny").to_dict(),
        "modalities": list(MODALITIES), "label_convention": get_convention(convention).to_dict(),
        "preprocess": PreprocessSettings().to_dict(), "spacing": [1.2, 1.0, 1.5], "epoch": 1,
        "step": 4, "model": state,
    })
    return run


def _brain() -> np.ndarray:
    grid = np.indices(SHAPE).astype(np.float64)
    centre, radii = np.array([11, 9, 5]), np.array([7, 5, 4])
    return (((grid - centre[:, None, None, None]) / radii[:, None, None, None]) ** 2).sum(0) <= 1


def _write_case(folder: Path, names: dict[str, str], affine: np.ndarray = LPS, seed: int = 0
                ) -> dict[str, Path]:
    """One NIfTI per modality: noise inside the brain ellipsoid, 0 outside."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for key, file_name in names.items():
        data = np.where(_brain(), rng.uniform(50, 150, SHAPE), 0).astype(np.float32)
        files[key] = folder / file_name
        nib.save(nib.Nifti1Image(data, affine), files[key])
    return files


def _digest(paths) -> dict[Path, str]:
    return {p: hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in paths}


def _crop_box_map(value: int) -> np.ndarray:
    """`value` inside the brain's bounding box grown by 2 voxels (the crop), 0 outside."""
    expected = np.zeros(SHAPE, dtype=np.uint8)
    idx = np.nonzero(_brain())
    box = tuple(slice(max(i.min() - 2, 0), i.max() + 3) for i in idx)
    expected[box] = value
    return expected


@pytest.mark.parametrize(("convention", "favour", "raw"), [("brats2023", 2, 2),
                                                           ("brats2020", 3, 4)])
def test_predict_files_writes_raw_labels_in_the_input_grid(tmp_path, convention, favour, raw):
    files = _write_case(tmp_path / "in", {m: f"case_{m}.nii.gz" for m in MODALITIES})
    before = _digest(files.values())
    predictor = Predictor.from_run(_make_run(tmp_path, convention, favour), device="cpu")
    out = predictor.predict_files(files, tmp_path / "out" / "pred.nii.gz")
    img = nib.load(out)
    assert img.shape == SHAPE
    np.testing.assert_allclose(img.affine, LPS, atol=1e-5)
    assert img.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(np.asarray(img.dataobj), _crop_box_map(raw))
    assert _digest(files.values()) == before
    assert [p.name for p in out.parent.iterdir()] == ["pred.nii.gz"]


def test_et_rule_threshold_keeps_the_physical_volume_and_brats_scope() -> None:
    assert et_rule_threshold(500, (240, 240, 155), (1.0, 1.0, 1.0)) == 500
    assert et_rule_threshold(500, (120, 120, 78), (2.0, 2.0, 2.0)) == 63  # 62 voxels: 496 mm^3
    assert et_rule_threshold(500, (256, 256, 106), (0.86, 0.86, 1.5)) == 451
    assert et_rule_threshold(500, (64, 64, 64), (1.0, 1.0, 1.0)) == 0  # the demo's phantom
    assert et_rule_threshold(500, (240, 240, 60), (1.0, 1.0, 1.0)) == 0  # a 60 mm slab
    assert et_rule_threshold(0, (240, 240, 155), (1.0, 1.0, 1.0)) == 0


def test_et_rule_end_to_end(tmp_path) -> None:
    big_voxels = np.diag([-5.0, -6.0, 10.0, 1.0])  # 300 mm^3 voxels: a 105 x 108 x 110 mm view
    files = _write_case(tmp_path / "in", {m: f"{m}.nii" for m in MODALITIES}, big_voxels)
    run = _make_run(tmp_path, "brats2023", favour=3)
    box = int((_crop_box_map(1) > 0).sum())
    for min_mm3, raw in ((300 * box + 1, 1), (300 * box, 3)):
        predictor = Predictor.from_run(run, device="cpu", infer=_cfg(et_min_voxels=min_mm3))
        out = predictor.predict_files(files, tmp_path / f"et{min_mm3}.nii.gz")
        np.testing.assert_array_equal(np.asarray(nib.load(out).dataobj), _crop_box_map(raw))


def test_et_rule_is_off_on_a_small_field_of_view(tmp_path) -> None:
    files = _write_case(tmp_path / "in", {m: f"{m}.nii" for m in MODALITIES})  # 25 x 18 x 16 mm
    run = _make_run(tmp_path, "brats2023", favour=3)
    predictor = Predictor.from_run(run, device="cpu", infer=_cfg(et_min_voxels=500))
    out = predictor.predict_files(files, tmp_path / "et.nii.gz")
    np.testing.assert_array_equal(np.asarray(nib.load(out).dataobj), _crop_box_map(3))


def test_subset_matched_by_name_with_synonyms(tmp_path) -> None:
    files = _write_case(tmp_path / "in", {"FLAIR": "a.nii.gz", "T1ce": "b.nii.gz"})
    predictor = Predictor.from_run(_make_run(tmp_path), device="cpu")
    out = predictor.predict_files(files, tmp_path / "p1.nii.gz")
    swapped = {"t1ce": files["T1ce"], "t2f": files["FLAIR"]}
    out2 = predictor.predict_files(swapped, tmp_path / "p2.nii.gz")
    first, second = (np.asarray(nib.load(p).dataobj) for p in (out, out2))
    np.testing.assert_array_equal(first, second)  # names, not positions, choose the channels
    assert set(np.unique(first)) <= set(get_convention("brats2023").raw_values)
    assert first.shape == SHAPE
    np.testing.assert_allclose(nib.load(out).affine, LPS, atol=1e-5)


def test_predict_loaded_returns_canonical_and_probabilities(tmp_path) -> None:
    from contraseg.data.cases import CaseSpec, ImageRef
    from contraseg.data.io import load_case

    files = _write_case(tmp_path / "in", {"flair": "a.nii.gz", "t1c": "b.nii.gz"})
    loaded = load_case(CaseSpec("c1", {m: ImageRef(p) for m, p in files.items()}))
    predictor = Predictor.from_run(_make_run(tmp_path), device="cpu")
    result = predictor.predict_loaded(loaded, probabilities=True)
    assert result.used == ("flair", "t1c")
    assert result.probabilities.shape == (4, *SHAPE)
    np.testing.assert_allclose(result.probabilities.sum(0), 1.0, atol=1e-5)
    np.testing.assert_array_equal(result.canonical, result.probabilities.argmax(0))
    np.testing.assert_array_equal(result.labels, result.canonical)  # brats2023: identity


def test_unknown_modality_is_refused_naming_the_file(tmp_path) -> None:
    files = _write_case(tmp_path / "in", {"flair": "a.nii.gz", "dwi": "b.nii.gz"})
    predictor = Predictor.from_run(_make_run(tmp_path), device="cpu")
    with pytest.raises(InputError, match="t1, t1c, t2, flair") as info:
        predictor.predict_files(files, tmp_path / "p.nii.gz")
    assert info.value.path == files["dwi"]
    assert not (tmp_path / "p.nii.gz").exists()


def test_mismatched_grid_is_refused_unless_resampled(tmp_path) -> None:
    files = _write_case(tmp_path / "in", {"flair": "a.nii.gz"})
    shifted = LPS.copy()
    shifted[:3, 3] += 2.0
    files |= _write_case(tmp_path / "in", {"t1c": "b.nii.gz"}, affine=shifted, seed=1)
    before = _digest(files.values())
    predictor = Predictor.from_run(_make_run(tmp_path), device="cpu")
    with pytest.raises(InputError, match="origin") as info:
        predictor.predict_files(files, tmp_path / "p.nii.gz")
    assert info.value.path == files["t1c"]
    out = predictor.predict_files(files, tmp_path / "p.nii.gz", resample_to="FLAIR")
    np.testing.assert_allclose(nib.load(out).affine, LPS, atol=1e-5)
    assert _digest(files.values()) == before


def test_predict_folder_goes_on_past_a_broken_case(tmp_path) -> None:
    data = tmp_path / "data"
    suffixes = {"t1n": "t1", "t1c": "t1c", "t2w": "t2", "t2f": "flair"}
    _write_case(data / "A", {s: f"A-{s}.nii.gz" for s in suffixes})
    _write_case(data / "B", {s: f"B-{s}.nii.gz" for s in ("t1c", "t2f")}, seed=1)  # 2 of 4
    broken = _write_case(data / "C", {s: f"C-{s}.nii.gz" for s in suffixes}, seed=2)["t1c"]
    broken.write_bytes(broken.read_bytes()[:200])  # truncated gzip
    predictor = Predictor.from_run(_make_run(tmp_path, favour=2), device="cpu")
    failures = predictor.predict_folder(data, tmp_path / "out", progress=False)
    assert [f.case_id for f in failures] == ["C"]
    assert str(broken) in failures[0].message and "\n" not in failures[0].message
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["A.nii.gz", "B.nii.gz"]
    for case in ("A", "B"):
        labels = np.asarray(nib.load(tmp_path / "out" / f"{case}.nii.gz").dataobj)
        np.testing.assert_array_equal(labels, _crop_box_map(2))


def test_predict_folder_writes_the_datasets_label_values(tmp_path) -> None:
    """A BraTS 2020 folder predicted by a BraTS 2023 run: enhancing is written as 4."""
    data = tmp_path / "data"
    _write_case(data / "P1", {s: f"P1_{s}.nii.gz" for s in ("t1", "t1ce", "t2", "flair")})
    predictor = Predictor.from_run(_make_run(tmp_path, "brats2023", favour=3), device="cpu")
    assert predictor.predict_folder(data, tmp_path / "out", progress=False) == []
    labels = np.asarray(nib.load(tmp_path / "out" / "P1.nii.gz").dataobj)
    np.testing.assert_array_equal(labels, _crop_box_map(4))
