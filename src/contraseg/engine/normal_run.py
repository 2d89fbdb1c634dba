"""Normal-appearance runs (a generator such as IntroVAE, trained on healthy T1) and the
segmenters that use one (CLFC): `contraseg normal` writes a case's pseudo-normal T1.

A segmenter that compares with a pseudo-normal (CLFC) is given its generator with
`normal_run=VAE_RUN`: `attach_normal_run` records the generator's architecture and source in
the segmenter's model settings and returns its weights, which the trainer copies into the
segmenter; `engine.prepare.add_case_inputs` computes each training case's pseudo-normals once,
cached on disk.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from contraseg.data.cases import CaseSpec, ImageRef
from contraseg.data.preprocess import PreprocessSettings
from contraseg.engine.prepare import preprocess_settings
from contraseg.errors import ConfigError, InputError
from contraseg.models.base import Method, MethodKind


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
    if method.kind is not MethodKind.GENERATOR:
        raise InputError(meta.get("path", run), f"is a {method.kind} run ({meta['method']}), "
                                                "not a generator such as introvae")
    return method, meta


def attach_normal_run(config) -> tuple[Any, dict[str, torch.Tensor] | None]:
    """(config with `model.generator` filled from `config.normal_run`, the generator's weights);
    (config, None) without a normal_run. Refuses a method that takes no generator."""
    from contraseg.models.registry import get_entry

    if config.normal_run is None:
        return config, None
    if not get_entry(config.method).cls.takes_normal_run:
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
    generator = method.normal_generator()
    if generator is None:
        return
    try:
        generator.load_state_dict(weights, strict=True)
    except RuntimeError as exc:
        raise ConfigError(f"normal_run: the generator's weights do not fit "
                          f"({str(exc).splitlines()[0][:160]})") from None


