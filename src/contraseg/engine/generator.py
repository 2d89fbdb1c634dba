"""Training a generator (IntroVAE, CLFC's normal-appearance network) with the segmentation engine.

A generator learns from healthy T1 volumes without labels: `normal_t1_case` picks, per case, the
phantom's tumour-free T1 (`-normal-t1n`, the `normal_t1` extra) when there is one, else the
case's T1 (a healthy subject's scan, e.g. IXI). Validation measures how well it reconstructs
held-out brains: PSNR and SSIM (MONAI's metrics) of the whole preprocessed volume.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from monai.metrics import PSNRMetric, SSIMMetric

from contraseg.data.cases import CaseSpec, ImageRef
from contraseg.data.dataset import TrainCase
from contraseg.errors import ConfigError
from contraseg.models.base import Method

GENERATOR_MODALITIES = ("t1",)


def normal_t1_case(case: CaseSpec) -> CaseSpec | None:
    """The case reduced to one healthy T1 (the `normal_t1` extra first), unlabelled; None when
    it has neither."""
    if "normal_t1" in case.extras:
        ref = ImageRef(case.extras["normal_t1"])
    elif "t1" in case.images:
        ref = case.images["t1"]
    else:
        return None
    return replace(case, images={"t1": ref}, label=None, extras={}, missing={})


def reconstruction_scores(reference: np.ndarray, output: np.ndarray) -> dict[str, float]:
    """PSNR (dB) and SSIM of a reconstructed volume against its reference, both on the
    reference's intensity range (max - min)."""
    data_range = float(reference.max() - reference.min()) or 1.0
    ref = torch.as_tensor(reference, dtype=torch.float32)[None, None]
    out = torch.as_tensor(output, dtype=torch.float32)[None, None]
    psnr = PSNRMetric(max_val=data_range)(out, ref)
    ssim = SSIMMetric(spatial_dims=3, data_range=data_range)(out, ref)
    return {"psnr": float(psnr.mean()), "ssim": float(ssim.mean())}


def validate_generator(method: Method, cases: list[TrainCase], config) -> dict[str, float]:
    """Mean PSNR and SSIM of the reconstructions of the validation volumes."""
    from contraseg.engine.infer import sliding_window_logits

    device = next(method.parameters()).device
    scores: dict[str, list[float]] = {"psnr": [], "ssim": []}
    for case in cases:
        image = torch.from_numpy(case.image)[None].to(device)
        available = torch.from_numpy(case.present)[None].to(device)
        out = sliding_window_logits(method, image, available, config.infer,
                                    config.data.patch_size)
        for key, value in reconstruction_scores(case.image[0], out[0, 0].cpu().numpy()).items():
            scores[key].append(value)
    return {key: float(np.mean(values)) for key, values in scores.items()}


def pseudo_normal(run: str | Path, t1: str | Path, out: str | Path, *, which: str = "best",
                  device: str = "auto") -> Path:
    """Write the pseudo-normal T1 of one case: the run's generator reconstructs the case's T1
    (preprocessed with the run's settings) slice by slice, and the result is put back on the
    input's grid and affine (linear interpolation; 0 outside the brain crop). Intensities stay
    in the run's units (z-scores inside the brain). `t1` may be a T1c when the case has no T1,
    as CLFC's authors do."""
    from contraseg.data.io import load_case, save_nifti
    from contraseg.data.preprocess import PreprocessSettings, invert_image, preprocess
    from contraseg.engine.checkpoint import load_method
    from contraseg.engine.config import config_from_dict
    from contraseg.engine.distributed import resolve_device
    from contraseg.engine.infer import sliding_window_logits

    method, meta = load_method(run, which, resolve_device(device))
    if method.kind != "generator":
        raise ConfigError(f"{run}: is a {method.kind} run ({meta['method']}); `normal` needs "
                          "a generator such as introvae")
    config = config_from_dict(meta["config"])
    loaded = load_case(CaseSpec("case", {"t1": ImageRef(Path(t1))}), with_label=False)
    pre = preprocess(loaded, PreprocessSettings.from_dict(meta["preprocess"]))
    image = torch.from_numpy(pre.image)[None]
    out_image = sliding_window_logits(method, image, torch.ones(1, 1, dtype=torch.bool),
                                      config.infer, config.data.patch_size)[0, 0].cpu().numpy()
    volume = invert_image(out_image, pre.record, fill=0.0)  # 0: the z-scored background
    return save_nifti(volume, loaded.affine, Path(out), header=loaded.header, dtype="float32")
