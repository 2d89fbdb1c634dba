"""`contraseg export`: a trained run's network as one self-contained file for deployment.

The exported module is the method's window function, `forward(image, available) -> logits`:
image (B, M [+ R], *window) on the run's preprocessed grid (modalities in the run's channel
order, missing ones zero; R per-case channels only for CLFC, its pseudo-normal T1), available
(B, M) bool, logits (B, C, *window). Reorientation, cropping, z-scoring, resampling, the sliding
window and the way back to the input grid are the caller's: contraseg's own `predict` (or the
Python API, `contraseg.Segmenter`) does them; the file's metadata says what they must be
(`contraseg.json` inside the TorchScript archive, or the ONNX model's metadata_props).

TorchScript is traced at one window of batch 1 (the shape in the metadata; call it once per
window), so shape arithmetic and any control flow that depended on the availability pattern
would be frozen into the trace: the trace is checked against the eager model on every
availability pattern and refused when they differ. (torch 2.13 marks `torch.jit.trace`
deprecated in favour of `torch.export`; TorchScript files still load in C++ and Python.)

ONNX (`torch.onnx.export`) is one file with its weights and a dynamic batch; when onnxruntime
is installed it is checked the same way, at batch 1 and 2.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import tempfile
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from contraseg.engine.checkpoint import find_checkpoint, load_method
from contraseg.engine.config import config_from_dict
from contraseg.engine.sliding_window import window_size
from contraseg.errors import ConfigError, InputError
from contraseg.evaluation.protocol import all_subsets, availability
from contraseg.models.base import MethodKind
from contraseg.utils.fs import atomic_path

FORMATS = ("torchscript", "onnx")
# onnxruntime's kernels sum in another order than torch's: tiny presets already differ by up to
# 7.5e-5 (DC-Seg), and deeper networks add more; a real divergence is far larger
ONNX_ATOL = 1e-3


class WindowModel(nn.Module):
    """The method's `forward` as a plain module of tensors in, tensor out."""

    def __init__(self, method: nn.Module):
        super().__init__()
        self.method = method

    def forward(self, image: Tensor, available: Tensor) -> Tensor:
        return self.method(image, available)


def example_inputs(method, window: tuple[int, ...], patterns: list[tuple[str, ...]],
                   extra_channels: int) -> list[tuple[Tensor, Tensor]]:
    """(image, available) pairs: one per pattern, the same random image."""
    gen = torch.Generator().manual_seed(0)
    image = torch.randn(1, len(method.modalities) + extra_channels, *window, generator=gen)
    return [(image, torch.tensor([availability(p, method.modalities)])) for p in patterns]


def export_metadata(meta: dict, window: tuple[int, ...], extra_channels: int) -> dict:
    return {"method": meta["method"], "modalities": list(meta["modalities"]), "batch": 1,
            "extra_channels": extra_channels, "window": list(window),
            "label_convention": meta["label_convention"], "preprocess": meta["preprocess"],
            "checkpoint": meta["path"], "step": meta.get("step"),
            "versions": meta.get("versions", {}),
            "inputs": "image (B, M+R, *window) float32 on the preprocessed grid; available "
                      "(B, M) bool", "outputs": "logits (B, C, *window)"}


def export_run(run: Path, out: Path, fmt: str = "torchscript", which: str = "auto",
               atol: float = 1e-4) -> Path:
    """Write the run's window model to `out`; returns `out`."""
    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt!r}: expected one of {', '.join(FORMATS)}")
    find_checkpoint(run, which)  # a clear error before anything is built
    method, meta = load_method(run, which, "cpu")
    if method.kind is not MethodKind.SEGMENTATION:
        raise InputError(meta["path"], f"is a {method.kind} run, not a segmenter")
    method = method.float().to(memory_format=torch.contiguous_format)
    config = config_from_dict(meta["config"])
    patch = tuple(int(n) for n in config.data.patch_size)
    # a 2.5D window spans the whole depth at inference (-1); the file is traced at the patch's
    window = tuple(p if w == -1 else w for w, p in zip(window_size(method, patch), patch,
                                                       strict=True))
    patterns = all_subsets(method.modalities)
    probe = example_inputs(method, window, patterns[:1], 0)[0]
    extra = method.case_inputs(probe[0], probe[1])
    extra_channels = 0 if extra is None else int(extra.shape[1])
    examples = example_inputs(method, window, [patterns[-1], *patterns[:-1]], extra_channels)
    metadata = export_metadata(meta, window, extra_channels)
    model = WindowModel(method).eval()
    with torch.no_grad():
        if fmt == "torchscript":
            return _torchscript(model, examples, metadata, out, atol)
        return _onnx(model, examples, metadata, out, atol)


def _torchscript(model: WindowModel, examples, metadata: dict, out: Path, atol: float) -> Path:
    with warnings.catch_warnings():  # shape arithmetic frozen into the trace: checked below
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)  # torch 2.13 prefers torch.export
        traced = torch.jit.trace(model, examples[0], check_trace=False)
    for image, available in examples:  # every availability pattern: nothing frozen in
        difference = (traced(image, available) - model(image, available)).abs().max().item()
        if difference > atol:
            raise ConfigError(f"{metadata['method']} cannot be traced faithfully: with "
                              f"{available.tolist()} the trace differs from the model by "
                              f"{difference:.2g}")
    with atomic_path(out) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(traced, str(tmp), _extra_files={"contraseg.json": json.dumps(metadata)})
    return out


def _onnx(model: WindowModel, examples, metadata: dict, out: Path, atol: float) -> Path:
    try:
        import onnx  # torch.onnx.export needs it too
    except ImportError:
        raise ConfigError("--format onnx needs the onnx package (pip install "
                          "'contraseg[onnx]'); --format torchscript needs nothing more") from None
    # traced at batch 2: an example batch of 1 would let the exporter fix the batch at 1
    batch = (torch.cat([examples[0][0], examples[1][0]]),
             torch.cat([examples[0][1], examples[1][1]]))
    metadata = {**metadata, "batch": "any"}
    # the exporter may write the weights to a second file beside the model: export into a
    # scratch folder, and write one self-contained file (models here are far below 2 GB)
    with tempfile.TemporaryDirectory() as scratch, _quiet_onnx_exporter():
        exported = Path(scratch) / "model.onnx"
        torch.onnx.export(model, batch, str(exported), input_names=["image", "available"],
                          output_names=["logits"], dynamic_axes={"image": {0: "batch"},
                                                                 "available": {0: "batch"},
                                                                 "logits": {0: "batch"}},
                          verbose=False)
        proto = onnx.load(str(exported))  # with the weights, wherever the exporter put them
    entry = proto.metadata_props.add()
    entry.key, entry.value = "contraseg", json.dumps(metadata)
    _check_onnx(proto, model, [*examples, batch], metadata, max(atol, ONNX_ATOL))
    with atomic_path(out) as tmp:
        onnx.save(proto, str(tmp))
    return out


@contextlib.contextmanager
def _quiet_onnx_exporter():
    """Hide the exporter's progress lines and its notes about torchvision ops (contraseg uses
    none); errors still surface."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def _check_onnx(proto, model: WindowModel, examples, metadata: dict, atol: float) -> None:
    """Compare the ONNX model with the eager one on each (image, available) of `examples`
    (every availability pattern, and a batch of two) when onnxruntime is installed (its
    kernels are not torch's: the tolerance scales with the logits' size)."""
    try:
        import onnxruntime
    except ImportError:
        return
    session = onnxruntime.InferenceSession(proto.SerializeToString(),
                                           providers=["CPUExecutionProvider"])
    for image, available in examples:
        expected = model(image, available)
        got = session.run(None, {"image": image.numpy(), "available": available.numpy()})[0]
        difference = (torch.from_numpy(got) - expected).abs().max().item()
        if difference > atol * max(1.0, expected.abs().max().item()):
            raise ConfigError(f"{metadata['method']}: the ONNX model differs from the run by "
                              f"{difference:.2g} with {available.tolist()}")


def read_metadata(path: Path) -> dict:
    """The metadata of an exported TorchScript file."""
    files = {"contraseg.json": ""}
    torch.jit.load(str(path), _extra_files=files)
    return json.loads(files["contraseg.json"])
