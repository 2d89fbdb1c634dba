"""The method contract as tests: subclass `MethodContract` in a plugin's test suite.

    from contraseg.testing import MethodContract

    class TestMyMethod(MethodContract):
        method = "my-method"  # its registered name, or "package.module:Class"
        preset = "tiny"  # a preset that trains in seconds on a CPU (32^3 patches or less)

pytest then runs, against the method, what contraseg's engine relies on (docs/extending.md):
- every modality subset gives finite logits of the right shape, through `forward` and through
  `encode` / `decode`;
- a missing channel is never read: filling it with noise, NaN or 1e30 changes neither the
  output nor the training loss;
- every trainable parameter gets a finite, non-zero gradient from the weighted loss, and
  `losses` returns exactly the terms its `loss_weights` name;
- a training run on the brain phantom writes a checkpoint that loads back into the same
  weights; stopped and resumed, it ends with the weights of an uninterrupted run;
- a trained run segments a case from every modality subset, on the case's grid;
- `export` writes a TorchScript file whose outputs match the method's.

Needs pytest (the `test` extra). Generator and pre-training methods run the tests that apply
to them; the rest are skipped with the reason.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import torch

from contraseg.engine.checkpoint import load_checkpoint, load_method
from contraseg.engine.config import load_config
from contraseg.models.base import Batch, Method, MethodKind
from contraseg.models.registry import build_method, canonical_name, get_entry

BRAIN_MODALITIES = ("t1", "t1c", "t2", "flair")
QUIET = ("log.curves=false", "log.tensorboard=false")


def all_subsets(m: int) -> torch.Tensor:
    """(2^m - 1, m) bool: every non-empty subset of m modalities, the full set last."""
    rows = [bits for bits in itertools.product([False, True], repeat=m) if any(bits)]
    return torch.tensor(rows)


class MethodContract:
    """Inherit and set `method` (and `preset` when it is not `tiny`)."""

    method: ClassVar[str]
    preset: ClassVar[str] = "tiny"
    # settings the contract's short runs add to the preset (`key=value`)
    overrides: ClassVar[tuple[str, ...]] = ()
    modalities: ClassVar[tuple[str, ...]] = BRAIN_MODALITIES
    num_classes: ClassVar[int] = 4  # the brain phantom's: background, necrosis, edema, ET
    phantom_size: ClassVar[int] = 32
    phantom_cases: ClassVar[int] = 4
    steps: ClassVar[int] = 4  # of the training run (resume stops it half way)

    # --- fixtures ----------------------------------------------------------------------
    @pytest.fixture(scope="class")
    def name(self) -> str:
        return canonical_name(self.method)

    @pytest.fixture(scope="class")
    def built(self, name) -> tuple[Method, list[int]]:
        """The method from the preset, seeded, and the preset's patch size."""
        config = load_config(name, self.preset, list(self.overrides))
        torch.manual_seed(0)
        method = build_method(name, self.modalities, self.num_classes, config.model,
                              config.loss_weights)
        return method, list(config.data.patch_size)

    @pytest.fixture(scope="class")
    def phantom(self, tmp_path_factory) -> Path:
        from contraseg.data.phantom import write_phantom

        out = tmp_path_factory.mktemp("contract-phantom") / "ph"
        write_phantom(out, cases=self.phantom_cases, size=self.phantom_size, seed=3)
        return out

    @pytest.fixture(scope="class")
    def trained(self, name, phantom, tmp_path_factory) -> Path:
        """A short run of the preset on the phantom (segmenters only: the tests that need it
        are skipped for the other kinds before anything trains)."""
        self._segmenter(name)
        out = tmp_path_factory.mktemp("contract-run") / "run"
        self._train(out, name, phantom, max_steps=None)
        return out

    def _train(self, out: Path, name: str | None, data: Path, max_steps: int | None,
               resume: bool = False) -> dict:
        from contraseg.engine.runs import start_training

        return start_training(out, method=name, data=[data], preset=self.preset,
                              overrides=[*self._schedule(), *QUIET, *self.overrides],
                              resume=resume, max_steps=max_steps, max_minutes=None,
                              console=None)

    def _schedule(self) -> list[str]:
        half = max(self.steps // 2, 1)
        return [f"iters_per_epoch={half}", f"epochs={-(-self.steps // half)}", "val_every=0",
                "budget_minutes=null", "keep_every_minutes=null", "data.workers=0"]

    def _inputs(self, shape: list[int], batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        gen = torch.Generator().manual_seed(0)
        images = torch.randn(batch, len(self.modalities), *shape, generator=gen)
        return images, torch.randint(0, self.num_classes, (batch, *shape), generator=gen)

    def _segmenter(self, name: str) -> None:
        kind = get_entry(name).cls.kind
        if kind is not MethodKind.SEGMENTATION:
            pytest.skip(f"{name} is a {kind} method: it gives no segmentation logits")

    # --- the network ---------------------------------------------------------------------
    def test_the_method_declares_its_contract(self, name, built):
        method, patch = built
        entry = get_entry(name)
        assert isinstance(entry.cls.kind, MethodKind)
        assert entry.cls.loss_terms and set(method.loss_weights) == set(entry.cls.loss_terms)
        assert int(method.size_divisor) >= 1
        method.check_patch(patch)  # the preset's own patch fits the network
        if entry.cls.pretraining_stage is not None:
            assert get_entry(entry.cls.pretraining_stage).cls.kind is MethodKind.PRETRAINING

    def test_every_subset_gives_finite_logits_of_the_right_shape(self, name, built):
        self._segmenter(name)
        method, shape = built
        method.eval()
        subsets = all_subsets(len(self.modalities))
        images, _ = self._inputs(shape, len(subsets))
        with torch.no_grad():
            logits = method(images, subsets)
            encoded = method.decode(method.encode(images), subsets)
        assert logits.shape == (len(subsets), method.out_channels, *shape)
        assert torch.isfinite(logits).all()
        torch.testing.assert_close(encoded, logits)

    @pytest.mark.parametrize("filler", ["noise", "nan", "huge"])
    def test_missing_channels_are_never_read(self, name, built, filler):
        self._segmenter(name)
        method, shape = built
        method.eval()
        subsets = all_subsets(len(self.modalities))[:-1]  # every subset that misses something
        images, _ = self._inputs(shape, len(subsets))
        keep = subsets.view(*subsets.shape, *([1] * len(shape)))
        fill = {"noise": torch.randn_like(images) * 5,
                "nan": torch.full_like(images, float("nan")),
                "huge": torch.full_like(images, 1e30)}[filler]
        with torch.no_grad():
            zeroed = method(images * keep, subsets)
            assert torch.equal(zeroed, method(torch.where(keep, images, fill), subsets))

    def test_training_loss_ignores_missing_channels(self, name, built):
        self._segmenter(name)
        method, shape = built
        method.train()
        rows = [[i % len(self.modalities) == j for j in range(len(self.modalities))]
                for i in range(2)]
        available = torch.tensor(rows)
        images, target = self._inputs(shape, 2)
        keep = available.view(*available.shape, *([1] * len(shape)))
        totals = []
        for x in (images * keep, torch.where(keep, images, torch.nan)):
            torch.manual_seed(1)
            total, _ = method.total_loss(Batch(x, available, target, present=available,
                                               epoch=10_000))
            assert torch.isfinite(total)
            totals.append(total.item())
        assert totals[0] == totals[1]

    def test_every_parameter_gets_a_gradient(self, name, built):
        """After one optimiser step (a zero-initialised head passes no gradient to the layers
        before it at step 0, by design)."""
        self._segmenter(name)
        method, shape = built
        method.train()
        images, target = self._inputs(shape, 2)
        # a late epoch, so that terms switched on after a warm-up count
        batch = Batch(images, torch.ones(2, len(self.modalities), dtype=torch.bool), target,
                      epoch=10_000)
        optimiser = torch.optim.SGD(method.parameters(), lr=0.01)
        for step in range(2):
            optimiser.zero_grad()
            total, terms = method.total_loss(batch)
            total.backward()
            if step == 0:
                optimiser.step()
        assert set(terms) <= set(method.loss_weights)
        for param_name, param in method.named_parameters():
            if param.requires_grad:
                assert param.grad is not None, f"{param_name} gets no gradient"
                assert torch.isfinite(param.grad).all(), f"{param_name}: non-finite gradient"
                assert param.grad.abs().sum() > 0, f"{param_name} has an all-zero gradient"

    # --- through the engine ---------------------------------------------------------------
    def test_a_run_saves_weights_that_load_back(self, name, trained):
        self._segmenter(name)
        saved = load_checkpoint(trained / "checkpoints" / "last.pt")
        assert saved["step"] == self.steps and saved["method"] == name
        assert saved["method_source"]["module"] == get_entry(name).source.module
        method, meta = load_method(trained, "last")
        loaded = method.state_dict()
        assert loaded.keys() == saved["model"].keys()
        for key, value in saved["model"].items():
            assert torch.equal(loaded[key].cpu(), value), key

    def test_stopped_and_resumed_equals_uninterrupted(self, name, phantom, trained,
                                                      tmp_path):
        self._segmenter(name)
        out = tmp_path / "part"
        stopped = self._train(out, name, phantom, max_steps=self.steps // 2)
        assert stopped["status"] == "stopped"
        resumed = self._train(out, None, phantom, max_steps=None, resume=True)
        assert resumed["status"] == "finished" and resumed["step"] == self.steps
        whole = load_checkpoint(trained / "checkpoints" / "last.pt")["model"]
        parts = load_checkpoint(out / "checkpoints" / "last.pt")["model"]
        for key, value in whole.items():
            assert torch.equal(parts[key], value), f"{key} differs after resume"

    def test_a_run_segments_every_modality_subset(self, name, trained):
        self._segmenter(name)
        from contraseg.api import Segmenter

        segmenter = Segmenter(trained, which="last", device="cpu")
        raw_values = segmenter.predictor.convention.raw_values
        rng = np.random.default_rng(0)
        shape = (self.phantom_size + 3, self.phantom_size + 1, self.phantom_size - 2)
        images = {m: rng.normal(size=shape).astype(np.float32) for m in segmenter.modalities}
        for subset in all_subsets(len(segmenter.modalities)).tolist():
            given = {m: images[m] for m, on in zip(segmenter.modalities, subset, strict=True)
                     if on}
            labels = segmenter.predict(given).labels
            assert labels.shape == shape, f"{sorted(given)}: labels {labels.shape}"
            assert set(np.unique(labels).tolist()) <= set(raw_values), sorted(given)

    def test_export_matches_the_method(self, name, trained, tmp_path):
        """export checks the trace on every availability pattern itself; here: the file
        loads on its own and answers like the method on its declared window."""
        self._segmenter(name)
        import json

        from contraseg.engine.export import export_run

        written = export_run(trained, tmp_path / "model.pt", "torchscript", "last")
        files = {"contraseg.json": ""}
        module = torch.jit.load(str(written), _extra_files=files)
        metadata = json.loads(files["contraseg.json"])
        method, _ = load_method(trained, "last")
        method = method.float().to(memory_format=torch.contiguous_format)
        images, _ = self._inputs(list(metadata["window"]), 1)
        available = torch.ones(1, len(method.modalities), dtype=torch.bool)
        extra = method.case_inputs(images, available)
        image = images if extra is None else torch.cat([images, extra], 1)
        assert image.shape[1] == len(metadata["modalities"]) + metadata["extra_channels"]
        with torch.no_grad():
            torch.testing.assert_close(module(image, available), method(image, available),
                                       atol=1e-4, rtol=1e-4)
