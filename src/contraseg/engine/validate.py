"""Validation during training: mean Dice per region of a segmenter on the validation cases
(every present modality), or how well a generator reconstructs held-out brains (PSNR and SSIM,
MONAI's metrics, of the whole preprocessed volume)."""

from __future__ import annotations

# settings a resumed run may change (a section, or one key of it: workers change no batch)
import numpy as np
import torch
from monai.metrics import PSNRMetric, SSIMMetric

from contraseg.data.labels import LabelConvention
from contraseg.data.patches import Case
from contraseg.engine.config import TrainConfig
from contraseg.models.base import Method


def validate(method: Method, cases: list[Case], config: TrainConfig,
             convention: LabelConvention) -> dict[str, float]:
    """Mean Dice per region over the validation cases, with every present modality."""
    from contraseg.engine.sliding_window import sliding_window_outputs
    from contraseg.evaluation.metrics import confusion_counts, overlap_metrics

    device = next(method.parameters()).device
    dice: dict[str, list[float]] = {region: [] for region in convention.regions}
    method.eval()
    for case in cases:
        image = torch.from_numpy(case.image)[None].to(device)
        available = torch.from_numpy(case.present)[None].to(device)
        logits = sliding_window_outputs(method, image, available, config.infer,
                                       config.data.patch_size)
        probs = logits if config.infer.blend_space == "probabilities" else method.activate(logits)
        pred = method.class_scores(probs)[0].argmax(0).cpu().numpy()
        pred_regions = convention.region_masks(pred)
        for region, ref in convention.region_masks(case.label).items():
            scores = overlap_metrics(confusion_counts(pred_regions[region], ref))
            dice[region].append(scores["dice"])
    method.train()
    means = {f"dice_{r}": float(np.mean(v)) for r, v in dice.items()}
    means["dice_mean"] = float(np.mean(list(means.values())))
    return means


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
    from contraseg.engine.sliding_window import sliding_window_outputs

    device = next(method.parameters()).device
    scores: dict[str, list[float]] = {"psnr": [], "ssim": []}
    for case in cases:
        volume = case.image  # a disk case reads it whole: read it once
        image = torch.from_numpy(volume)[None].to(device)
        available = torch.from_numpy(case.present)[None].to(device)
        out = sliding_window_outputs(method, image, available, config.infer,
                                    config.data.patch_size)
        for key, value in reconstruction_scores(volume[0], out[0, 0].cpu().numpy()).items():
            scores[key].append(value)
    return {key: float(np.mean(values)) for key, values in scores.items()}


def validation_scores(method: Method, cases: list[Case], config: TrainConfig,
                      convention: LabelConvention | None) -> dict[str, float]:
    """What a run validates: a segmenter's Dice (`validate`), or, for a generator (no label
    convention), its reconstructions' PSNR and SSIM (`validate_generator`)."""
    if convention is None:
        return validate_generator(method, cases, config)
    return validate(method, cases, config, convention)
