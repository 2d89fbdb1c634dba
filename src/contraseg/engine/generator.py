"""Training a generator (IntroVAE, CLFC's normal-appearance network) with the segmentation engine.

A generator learns normal appearance from healthy T1: `normal_t1_case` picks, per case, the
phantom's tumour-free T1 (`-normal-t1n`, the `normal_t1` extra) when there is one, else the
case's T1: a healthy subject's scan (e.g. IXI), or the slices of a labelled tumour case that
hold no tumour (the trainer samples only those). Validation measures how well it reconstructs
held-out brains: PSNR and SSIM (MONAI's metrics) of the whole preprocessed volume.

A segmenter that compares with a pseudo-normal (CLFC) is given its generator with
`normal_run=VAE_RUN`: `attach_normal_run` records the generator's architecture and source in
the segmenter's model settings and returns its weights, which the trainer copies into the
segmenter; `add_case_inputs` computes each training case's pseudo-normals once, cached on disk.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.metrics import PSNRMetric, SSIMMetric

from contraseg.data.cases import CaseSpec, ImageRef
from contraseg.data.dataset import Case
from contraseg.data.preprocess import PreprocessSettings
from contraseg.errors import ConfigError, InputError
from contraseg.models.base import Method
from contraseg.utils.fs import atomic_path

GENERATOR_MODALITIES = ("t1",)


def normal_t1_case(case: CaseSpec, keep_label: bool = True) -> CaseSpec | None:
    """The case reduced to one healthy T1: the `normal_t1` extra (unlabelled), else its T1 with
    its label when it has one and `keep_label` (the trainer then samples only the slices that
    hold no tumour: `PatchSampler(tumour_free=True)`); None when it has no T1."""
    if "normal_t1" in case.extras:
        return replace(case, images={"t1": ImageRef(case.extras["normal_t1"])}, label=None,
                       extras={}, missing={})
    if "t1" not in case.images:
        return None
    return replace(case, images={"t1": case.images["t1"]},
                   label=case.label if keep_label else None, extras={}, missing={})


def reconstruction_scores(reference: np.ndarray, output: np.ndarray) -> dict[str, float]:
    """PSNR (dB) and SSIM of a reconstructed volume against its reference, both on the
    reference's intensity range (max - min)."""
    data_range = float(reference.max() - reference.min()) or 1.0
    ref = torch.as_tensor(reference, dtype=torch.float32)[None, None]
    out = torch.as_tensor(output, dtype=torch.float32)[None, None]
    psnr = PSNRMetric(max_val=data_range)(out, ref)
    ssim = SSIMMetric(spatial_dims=3, data_range=data_range)(out, ref)
    return {"psnr": float(psnr.mean()), "ssim": float(ssim.mean())}


def validate_generator(method: Method, cases: list[Case], config) -> dict[str, float]:
    """Mean PSNR and SSIM of the reconstructions of the validation volumes."""
    from contraseg.engine.infer import sliding_window_logits

    device = next(method.parameters()).device
    scores: dict[str, list[float]] = {"psnr": [], "ssim": []}
    for case in cases:
        volume = case.image  # a disk case reads it whole: read it once
        image = torch.from_numpy(volume)[None].to(device)
        available = torch.from_numpy(case.present)[None].to(device)
        out = sliding_window_logits(method, image, available, config.infer,
                                    config.data.patch_size)
        for key, value in reconstruction_scores(volume[0], out[0, 0].cpu().numpy()).items():
            scores[key].append(value)
    return {key: float(np.mean(values)) for key, values in scores.items()}


def pseudo_normal(run: str | Path, t1: str | Path, out: str | Path, *, which: str = "auto",
                  device: str = "auto") -> Path:
    """Write the pseudo-normal T1 of one case: the run's generator reconstructs the case's T1
    (preprocessed with the run's settings) whole slice by whole slice (the same computation
    as CLFC's), and the result is put back on the
    input's grid and affine (linear interpolation; 0 outside the brain crop). Intensities stay
    in the run's units (z-scores inside the brain). `t1` may be a T1c when the case has no T1,
    as CLFC's authors do."""
    from contraseg.data.io import load_case, save_nifti
    from contraseg.data.preprocess import PreprocessSettings, invert_image, preprocess
    from contraseg.engine.distributed import resolve_device

    method, meta = load_generator(run, which, resolve_device(device))
    loaded = load_case(CaseSpec("case", {"t1": ImageRef(Path(t1))}), with_label=False)
    pre = preprocess(loaded, PreprocessSettings.from_dict(meta["preprocess"]))
    image = torch.from_numpy(pre.image)[None].to(next(method.parameters()).device)
    with torch.inference_mode():
        out_image = method.pseudo_normal(image)[0, 0].cpu().numpy()
    volume = invert_image(out_image, pre.record, fill=0.0)  # 0: the z-scored background
    return save_nifti(volume, loaded.affine, Path(out), header=loaded.header, dtype="float32")


def load_generator(run: str | Path, which: str = "auto", device: str | torch.device = "cpu"
                   ) -> tuple[Method, dict[str, Any]]:
    """A generator run's method and metadata; any other run is refused naming its file."""
    from contraseg.engine.checkpoint import load_method

    method, meta = load_method(run, which, device)
    if method.kind != "generator" or not hasattr(method, "pseudo_normal"):
        raise InputError(meta.get("path", run), f"is a {method.kind} run ({meta['method']}), "
                                                "not a generator such as introvae")
    return method, meta


def attach_normal_run(config) -> tuple[Any, dict[str, torch.Tensor] | None]:
    """(config with `model.generator` filled from `config.normal_run`, the generator's weights);
    (config, None) without a normal_run. Refuses a method that takes no generator."""
    from contraseg.models.registry import get_entry

    if config.normal_run is None:
        return config, None
    fields = {f.name for f in dataclasses.fields(get_entry(config.method).config_cls)}
    if "generator" not in fields:
        raise ConfigError(f"normal_run: method {config.method} does not use a normal-appearance "
                          "generator (clfc does)")
    generator, meta = load_generator(config.normal_run)
    check_same_preprocessing(PreprocessSettings.from_dict(meta["preprocess"]), config)
    spec = {"method": meta["method"], "model": meta["config"].get("model", {}),
            "run": str(Path(meta["path"]).resolve())}
    return replace(config, model={**config.model, "generator": spec}), generator.state_dict()


def untrained_generator(config) -> bool:
    """True when the method would compare against a generator nobody trained: a preset's
    architecture (clfc `tiny`, for tests) without `normal_run`, so its pseudo-normal is noise."""
    model = config.model if isinstance(config.model, dict) else {}
    return (config.normal_run is None and bool(model.get("generator"))
            and model.get("normal_network", True))


def check_same_preprocessing(trained: PreprocessSettings, config) -> None:
    """Refuse a generator whose slices were preprocessed otherwise than the segmenter's will be
    (another grid, orientation, crop or normalisation): its pseudo-normals would be wrong."""
    from contraseg.engine.train import preprocess_settings  # train imports this module

    ours = preprocess_settings(config)
    if replace(trained, version=ours.version) == ours:
        return
    if trained.target_spacing != ours.target_spacing:
        raise ConfigError(f"normal_run: the generator learnt slices on the "
                          f"{_grid_name(trained.target_spacing)} grid, this run samples the "
                          f"{_grid_name(ours.target_spacing)} grid (set data.target_spacing "
                          "to the generator's)")
    raise ConfigError(f"normal_run: the generator learnt slices preprocessed with "
                      f"{trained.to_dict()}, this run's are {ours.to_dict()}")


def _grid_name(spacing) -> str:
    return "input" if spacing is None else "x".join(f"{v:g}" for v in spacing) + " mm"


def load_generator_weights(method: Method, weights: dict[str, torch.Tensor]) -> None:
    """Copy a normal_run's weights into the segmenter's frozen generator (none to copy into
    when the settings leave the generator out, e.g. CLFC's Baseline-1)."""
    if getattr(method, "generator", None) is None:
        return
    try:
        method.generator.load_state_dict(weights, strict=True)
    except RuntimeError as exc:
        raise ConfigError(f"normal_run: the generator's weights do not fit "
                          f"({str(exc).splitlines()[0][:160]})") from None


def add_case_inputs(method: Method, cases: list[Case], cache_dir: Path) -> None:
    """Compute each case's `case_inputs` once (on the method's device) and keep it with the
    case. Files in `cache_dir/case-inputs`, keyed by the method's fingerprint and the case's
    `content_key`, let a later run (another fold, another seed) read them back; for a case read
    from the case cache that key is its entry, so such a run reads none of the images."""
    fingerprint = method.case_inputs_fingerprint()
    if fingerprint is None:
        return
    folder = Path(cache_dir) / "case-inputs"
    folder.mkdir(parents=True, exist_ok=True)
    device = next(method.parameters()).device
    for case in cases:
        digest = hashlib.sha1(fingerprint.encode())
        digest.update(case.content_key().encode())
        path = folder / f"{digest.hexdigest()}.npy"
        if not path.is_file():
            image = torch.from_numpy(np.ascontiguousarray(case.image))[None].to(device)
            present = torch.from_numpy(case.present)[None].to(device)
            with torch.inference_mode():
                values = method.case_inputs(image, present)
            with atomic_path(path) as tmp:  # ranks may race: each writes its own, then renames
                np.save(tmp, values[0].float().cpu().numpy())
        case.attach_inputs(path)
