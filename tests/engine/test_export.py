"""`contraseg export`: the exported network gives the run's own logits on a phantom case, for
every kind of method (concatenating, per-modality encoders, per-case inputs, 2D)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from contraseg.data.io import load_case
from contraseg.data.layouts import discover
from contraseg.data.preprocess import preprocess
from contraseg.engine.export import WindowModel, example_inputs, export_run, read_metadata
from contraseg.engine.predictor import Predictor
from contraseg.engine.sliding_window import window_size, with_case_inputs
from contraseg.errors import ConfigError
from contraseg.evaluation.protocol import availability
from contraseg.evaluation.representations import central_crop
from tests.conftest import REPO

PATTERNS = [("t1", "t1c", "t2", "flair"), ("flair",), ("t1c", "t2")]


@pytest.fixture(scope="module")
def phantom(make_phantom) -> Path:
    return make_phantom(cases=3, size=32, seed=11)


def phantom_window(run: Path, phantom: Path, window: list[int]) -> tuple[Predictor, torch.Tensor]:
    """The run's preprocessed view of a phantom case, cropped to the exported window."""
    predictor = Predictor.from_run(run, device="cpu")
    loaded = load_case(discover(phantom).cases[0], with_label=False)
    pre = preprocess(loaded, predictor.preprocess)
    image, present = predictor.channels(pre.image, pre.modalities)
    image = with_case_inputs(predictor.method, image, present)
    return predictor, central_crop(image[0], window)[None].contiguous()


@pytest.mark.parametrize("method", ["unet", "rfnet", "clfc", "swin-moco"])
def test_the_exported_network_gives_the_runs_logits(tmp_path, phantom, method, tiny_run):
    run = tiny_run(method, phantom)
    out = export_run(run, tmp_path / f"{method}.pt")
    exported = torch.jit.load(str(out))
    meta = read_metadata(out)
    predictor, window = phantom_window(run, phantom, meta["window"])
    assert meta["window"] == list(window_size(predictor.method, predictor.roi_size)) or (
        method == "clfc" and meta["window"][-1] == predictor.roi_size[-1])  # 2.5D: the patch
    model = predictor.method.float().to(memory_format=torch.contiguous_format)
    with torch.no_grad():
        for pattern in PATTERNS:
            available = torch.tensor([availability(pattern, predictor.modalities)])
            expected = model(window, available)
            got = exported(window, available)
            assert got.shape == expected.shape
            assert (got - expected).abs().max().item() < 1e-4, pattern
    assert meta["method"] == method and meta["modalities"] == list(predictor.modalities)
    assert meta["extra_channels"] == window.shape[1] - len(predictor.modalities)
    assert meta["label_convention"]["class_names"][0] == "background"


@pytest.mark.slow(reason="the ONNX exporter and onnxruntime: 7 s for the U-Net, 30 s for "
                         "RFNet; the TorchScript export is checked in the quick suite")
@pytest.mark.parametrize("method", ["unet", "rfnet"])
def test_the_onnx_file_gives_the_runs_logits_alone_and_batched(tmp_path, phantom, method,
                                                               tiny_run):
    """One self-contained file (no weights file left beside it), its metadata, and in
    onnxruntime the run's logits on every pattern, at batch 1 and 2 (the batch is dynamic)."""
    onnx = pytest.importorskip("onnx", reason="the onnx extra is not installed")
    onnxruntime = pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    run = tiny_run(method, phantom)
    out = export_run(run, tmp_path / "out" / f"{method}.onnx", "onnx")
    assert sorted(p.name for p in out.parent.iterdir()) == [f"{method}.onnx"]
    meta = json.loads({p.key: p.value for p in onnx.load(str(out)).metadata_props}["contraseg"])
    assert meta["method"] == method and meta["batch"] == "any"
    predictor, window = phantom_window(run, phantom, meta["window"])
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    model = predictor.method.float().to(memory_format=torch.contiguous_format)
    masks = torch.tensor([availability(p, predictor.modalities) for p in PATTERNS])
    images = window.expand(len(PATTERNS), *window.shape[1:]).contiguous()
    with torch.no_grad():
        expected = model(images, masks)
    for rows in ([0], [1], [1, 2]):
        got = session.run(None, {"image": images[rows].numpy(), "available": masks[rows].numpy()})
        assert got[0].shape == tuple(expected[rows].shape)
        assert np.abs(got[0] - expected[rows].numpy()).max() < 1e-4 * max(
            1.0, expected.abs().max().item()), rows


@pytest.mark.slow(reason="an ONNX export and onnxruntime (about 7 s)")
def test_an_onnx_model_that_differs_from_the_run_is_refused(tmp_path, phantom, tiny_run):
    pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    from contraseg.engine.export import _check_onnx

    run = tiny_run("unet", phantom)
    out = export_run(run, tmp_path / "unet.onnx", "onnx")
    import onnx

    method = Predictor.from_run(run, device="cpu").method.float()
    examples = example_inputs(method, tuple(read_onnx_window(onnx, out)), [("flair",)], 0)
    with torch.no_grad():
        _check_onnx(onnx.load(str(out)), WindowModel(method).eval(), examples, {"method": "unet"},
                    1e-4)  # the run itself: accepted
        for parameter in method.parameters():
            parameter.add_(0.05)
        with pytest.raises(ConfigError, match="the ONNX model differs from the run"):
            _check_onnx(onnx.load(str(out)), WindowModel(method).eval(), examples,
                        {"method": "unet"}, 1e-4)


def read_onnx_window(onnx, path: Path) -> list[int]:
    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    return json.loads(props["contraseg"])["window"]


def test_export_refuses_a_format_it_cannot_write(tmp_path, phantom, tiny_run):
    run = tiny_run("unet", phantom)
    with pytest.raises(ConfigError, match="--format 'tflite'"):
        export_run(run, tmp_path / "m.tflite", "tflite")
    if importlib.util.find_spec("onnx") is None:
        with pytest.raises(ConfigError, match="needs the onnx package"):
            export_run(run, tmp_path / "m.onnx", "onnx")
    assert not any(tmp_path.iterdir())  # nothing written


def test_export_from_the_command_line(tmp_path, phantom, tiny_run):
    run = tiny_run("unet", phantom)
    env = {"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-m", "contraseg", "export", "--run", str(run),
                             "--out", str(tmp_path / "unet.pt")], capture_output=True,
                            text=True, env=env)
    assert result.returncode == 0, result.stderr
    assert "wrote" in result.stdout and (tmp_path / "unet.pt").is_file()


def test_the_python_api_segments_arrays_like_predict_segments_files(tmp_path, phantom, tiny_run):
    """Segmenter.predict on the case's arrays and affine equals `predict` on its files."""
    import nibabel as nib
    import numpy as np

    from contraseg import Segmenter
    from contraseg.errors import InputError

    run = tiny_run("unet", phantom)
    case = discover(phantom).cases[0]
    files = {m: case.images[m].path for m in ("t1c", "flair")}
    written = Predictor.from_run(run, device="cpu").predict_files(files, tmp_path / "p.nii.gz")
    volumes = {"T1ce": nib.load(files["t1c"]), "FLAIR": nib.load(files["flair"])}
    seg = Segmenter(run, device="cpu")
    result = seg.predict({m: v.get_fdata() for m, v in volumes.items()},
                         volumes["FLAIR"].affine, probabilities=True)
    assert np.array_equal(result.labels, np.asarray(nib.load(written).dataobj))
    assert result.used == ("t1c", "flair") and seg.class_names[0] == "background"
    assert result.probabilities.shape == (len(seg.class_names), *result.labels.shape)
    assert np.allclose(result.probabilities.sum(0), 1, atol=1e-4)
    with pytest.raises(InputError, match="3D arrays of one shape"):
        seg.predict({"t1c": np.zeros((4, 4, 4)), "flair": np.zeros((4, 4, 5))})
