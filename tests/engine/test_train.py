"""The training engine end to end on a tiny phantom: runs, resume equality, DDP, refusals."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from contraseg.engine.checkpoint import load_checkpoint, load_method, save_checkpoint
from contraseg.engine.config import load_config
from contraseg.engine.predictor import Predictor
from contraseg.engine.runs import start_training
from contraseg.errors import ConfigError, InputError
from tests.conftest import QUIET, STARTS_PROCESSES
from tests.runners import process_env

TINY = ["val_every=0", "epochs=3"]


@pytest.fixture(scope="module")
def phantom(make_phantom) -> Path:
    return make_phantom(cases=4, size=32, seed=3)


def train(out: Path, data: Path, overrides=TINY, quiet: bool = True, **kwargs) -> dict:
    """A tiny run; `quiet`: without progress.png and tensorboard/ (tests that look at them
    pass quiet=False)."""
    overrides = [*overrides, *QUIET] if quiet else list(overrides)
    return start_training(out, method=kwargs.pop("method", "unet"), data=[data], preset="tiny",
                          overrides=overrides, resume=kwargs.pop("resume", False),
                          max_steps=kwargs.pop("max_steps", None), max_minutes=None,
                          console=None, **kwargs)


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run / "checkpoints" / "last.pt")["model"]


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key


def test_run_folder_contents(tmp_path, phantom):
    info = train(tmp_path / "run", phantom, ["epochs=2", "val_every=1"], quiet=False)
    run = tmp_path / "run"
    assert info["status"] == "finished" and info["step"] == 4
    assert {p.name for p in run.iterdir()} >= {"config.yaml", "run.json", "log.jsonl",
                                               "checkpoints", "tensorboard", "progress.png"}
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2]
    assert set(log[0]["loss"]) == {"dice", "ce", "total"}
    assert 0.0 <= log[-1]["val"]["dice_mean"] <= 1.0
    ckpt = load_checkpoint(run / "checkpoints" / "best.pt")
    assert ckpt["method"] == "unet" and ckpt["modalities"] == ["t1", "t1c", "t2", "flair"]
    assert ckpt["label_convention"]["name"] == "brats2023"
    assert ckpt["config"]["preset"] == "tiny" and ckpt["step"] in (2, 4)
    assert set(info["split"]) == {"train", "val"} and len(info["split"]["val"]) == 1


def test_a_quiet_run_draws_no_curves_and_writes_no_tensorboard(tmp_path, phantom):
    """log.curves / log.tensorboard off: no progress.png, no tensorboard/, the same log; a
    resume may turn them on (they are not training settings)."""
    info = train(tmp_path / "run", phantom, ["epochs=1", "val_every=0"])
    assert info["config"]["log"] == {"curves": False, "tensorboard": False}
    assert not (tmp_path / "run" / "progress.png").exists()
    assert not (tmp_path / "run" / "tensorboard").exists()
    assert len((tmp_path / "run" / "log.jsonl").read_text().splitlines()) == 1
    resumed = start_training(tmp_path / "run", method=None, data=[], preset="tiny",
                             overrides=["epochs=2", "log.curves=true", "log.tensorboard=true"],
                             resume=True, max_steps=None, max_minutes=None, console=None)
    assert resumed["status"] == "finished" and resumed["config"]["log"]["curves"] is True
    assert (tmp_path / "run" / "progress.png").is_file()
    assert any((tmp_path / "run" / "tensorboard").iterdir())


def test_stopped_and_resumed_equals_uninterrupted(tmp_path, phantom, tiny_run):
    full = tiny_run("unet", phantom, *TINY, *QUIET)
    stopped = train(tmp_path / "part", phantom, max_steps=3)  # mid-epoch 2
    assert stopped["status"] == "stopped" and stopped["step"] == 3
    last = tmp_path / "part" / "checkpoints" / "last.pt"
    state = load_checkpoint(last)
    assert 0 < state["train_seconds"] <= stopped["train_seconds"]
    save_checkpoint(last, {**state, "train_seconds": 1000.0})  # a long first session
    tick = time.monotonic()
    resumed = start_training(tmp_path / "part", method=None, data=[], preset="tiny",
                             overrides=[], resume=True, max_steps=None, max_minutes=None,
                             console=None)
    assert resumed["status"] == "finished" and resumed["step"] == 6
    assert_same_weights(full, tmp_path / "part")
    # the run's training time adds the sessions up
    assert 1000 < resumed["train_seconds"] < 1000 + time.monotonic() - tick


AUGMENT_ALL = ["augment.rotate_prob=1.0", "augment.scale_prob=1.0", "augment.shift_prob=1.0"]


@STARTS_PROCESSES
def test_loader_workers_give_the_same_weights_and_resume_across_worker_counts(tmp_path,
                                                                               phantom):
    """Batches prepared by 0 or 2 workers (every augmentation on) train bit-identical weights;
    a run stopped with 2 workers and resumed with 0 ends as the uninterrupted one."""
    train(tmp_path / "w0", phantom, [*TINY, *AUGMENT_ALL])
    info = train(tmp_path / "w2", phantom, [*TINY, *AUGMENT_ALL, "data.workers=2"])
    assert info["config"]["data"]["workers"] == 2
    assert_same_weights(tmp_path / "w0", tmp_path / "w2")
    train(tmp_path / "part", phantom, [*TINY, *AUGMENT_ALL, "data.workers=2"], max_steps=3)
    resumed = train(tmp_path / "part", phantom, [*TINY, *AUGMENT_ALL, "data.workers=0"],
                    resume=True)
    assert resumed["step"] == 6
    assert_same_weights(tmp_path / "w0", tmp_path / "part")
    log = [json.loads(line) for line in (tmp_path / "w2" / "log.jsonl").read_text().splitlines()]
    assert all(record["data_seconds"] >= 0 for record in log)
    assert info["memory"]["peak_rss_mb"] > 0
    with pytest.raises(ConfigError, match="data.workers"):
        train(tmp_path / "bad", phantom, [*TINY, "data.workers=-1"])
    with pytest.raises(ConfigError, match="data.cache_dtype 'int8'"):
        train(tmp_path / "bad", phantom, [*TINY, "data.cache_dtype=int8"])


def test_a_float16_cache_trains_and_stores_half_precision_images(tmp_path, phantom):
    info = train(tmp_path / "half", phantom, ["epochs=1", "val_every=0",
                                              "data.cache_dtype=float16"])
    assert info["status"] == "finished"
    images = list((tmp_path / "half" / "cache").glob("*/image.npy"))
    assert len(images) == 4  # every case, training and validation
    assert all(np.load(path, mmap_mode="r").dtype == np.float16 for path in images)


def _cli(*args: str, **kwargs) -> subprocess.Popen:
    env = process_env()
    return subprocess.Popen([sys.executable, "-m", "contraseg", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


@pytest.mark.slow(reason="starts three training processes and SIGKILLs one (about 25 s); "
                         "Ctrl-C and stop-and-resume are checked in process in the quick suite")
def test_killed_and_resumed_equals_uninterrupted(tmp_path, phantom):
    """SIGKILL a real training process after its first checkpoint, resume, compare."""
    args = ["--method", "unet", "--data", str(phantom), "--preset", "tiny",
            "--set", "val_every=0", "--set", "epochs=4"]
    assert _cli("train", "--out", str(tmp_path / "full"), *args).wait() == 0
    proc = _cli("train", "--out", str(tmp_path / "killed"), *args)
    last = tmp_path / "killed" / "checkpoints" / "last.pt"
    deadline = time.monotonic() + 120
    while not last.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    step = load_checkpoint(last)["step"]
    resumed = _cli("train", "--out", str(tmp_path / "killed"), "--resume")
    assert resumed.wait() == 0, resumed.stderr.read()
    assert_same_weights(tmp_path / "full", tmp_path / "killed")
    assert step <= 8


def test_ctrl_c_ends_the_step_saves_it_and_resumes_to_the_same_weights(tmp_path, phantom,
                                                                       monkeypatch, tiny_run):
    """SIGINT after step 3 (mid-epoch 2 of 3): the run stops there, saved and marked
    interrupted; --resume ends with the weights of an uninterrupted run."""
    from contraseg.engine.train import Trainer

    original = Trainer._train_step

    def step_then_interrupt(self, arrays):
        terms = original(self, arrays)
        if self.step == 3:
            os.kill(os.getpid(), signal.SIGINT)
        return terms

    monkeypatch.setattr(Trainer, "_train_step", step_then_interrupt)
    info = train(tmp_path / "part", phantom)
    assert (info["status"], info["step"]) == ("interrupted", 3)
    assert load_checkpoint(tmp_path / "part" / "checkpoints" / "last.pt")["step"] == 3
    monkeypatch.undo()
    assert train(tmp_path / "part", phantom, resume=True)["status"] == "finished"
    assert_same_weights(tiny_run("unet", phantom, *TINY, *QUIET), tmp_path / "part")


def test_a_second_ctrl_c_stops_at_once():
    from contraseg.engine.train import StopOnInterrupt

    before = signal.getsignal(signal.SIGINT)
    with StopOnInterrupt() as interrupt:
        os.kill(os.getpid(), signal.SIGINT)
        assert interrupt.requested
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is before  # restored


@pytest.mark.slow(reason="torchrun starts two ranks that each import torch and train "
                         "(15-25 s a method)")
@STARTS_PROCESSES
@pytest.mark.parametrize("method", ["unet", "dc-seg", "dcl-manet"])  # per-modality modules
def test_two_process_gloo_ddp_keeps_ranks_identical(tmp_path, phantom, method):
    env = process_env(OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "contraseg", "train",
           "--method", method, "--data", str(phantom), "--out", str(tmp_path / "ddp"),
           "--preset", "tiny", "--set", "val_every=0", "--set", "device=cpu"]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-6000:]  # the ranks' tracebacks, then torchrun's
    info = json.loads((tmp_path / "ddp" / "run.json").read_text())
    assert info["world_size"] == 2
    checksums = info["rank_checksums"]
    assert len(checksums) == 2 and checksums[0] == checksums[1]
    # the ranks trained on different patches: the result differs from a 1-process run
    single = train(tmp_path / "single", phantom, ["val_every=0"], method=method)
    assert single["rank_checksums"][0] != checksums[0]


@pytest.mark.slow(reason="torchrun starts two ranks that train for a 15-second budget")
@STARTS_PROCESSES
def test_two_ranks_stop_a_budget_at_the_same_step(tmp_path, phantom):
    """Each rank times its own clock; the fitted and refitted step counts are agreed on (the
    smallest), or one rank would stop while the other waits for it forever."""
    env = process_env(OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "contraseg", "train", "--method", "unet", "--data", str(phantom), "--out",
           str(tmp_path / "ddp"), "--preset", "tiny", "--set", "val_every=0", "--set",
           "device=cpu", "--set", "epochs=100000", "--set", "iters_per_epoch=7", "--set",
           "budget_minutes=0.25"]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-6000:]
    info = json.loads((tmp_path / "ddp" / "run.json").read_text())
    assert info["status"] == "finished" and info["step"] == info["budget"]["total_steps"] > 20
    assert info["budget"]["refits"] >= 1 and len(set(info["rank_checksums"])) == 1


@pytest.mark.slow(reason="two torchrun runs of two ranks, one with loader workers (about 35 s)")
@STARTS_PROCESSES
def test_two_process_ddp_with_loader_workers_trains_as_without(tmp_path, phantom):
    """Each rank's workers prepare that rank's batches: the same weights as without workers."""
    env = process_env(OMP_NUM_THREADS="1")
    checksums = []
    for workers in (0, 2):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node=2", "-m", "contraseg", "train", "--method", "unet",
               "--data", str(phantom), "--out", str(tmp_path / f"ddp{workers}"),
               "--preset", "tiny", "--set", "val_every=0", "--set", "device=cpu",
               "--set", f"data.workers={workers}"]
        result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-6000:]
        info = json.loads((tmp_path / f"ddp{workers}" / "run.json").read_text())
        assert info["world_size"] == 2 and len(set(info["rank_checksums"])) == 1
        checksums.append(info["rank_checksums"][0])
    assert checksums[0] == checksums[1]
    assert_same_weights(tmp_path / "ddp0", tmp_path / "ddp2")


def test_existing_run_is_not_overwritten(tmp_path, phantom):
    train(tmp_path / "run", phantom, ["epochs=1", "val_every=0"])
    with pytest.raises(InputError, match="--resume"):
        train(tmp_path / "run", phantom, ["epochs=1", "val_every=0"])


def test_resume_refuses_changed_settings(tmp_path, phantom):
    train(tmp_path / "run", phantom, ["epochs=1", "val_every=0"], max_steps=1)
    with pytest.raises(ConfigError, match="optim.lr"):
        start_training(tmp_path / "run", method=None, data=[], preset="tiny",
                       overrides=["optim.lr=0.5"], resume=True, max_steps=None,
                       max_minutes=None, console=None)
    with pytest.raises(ConfigError, match="trains unet"):
        start_training(tmp_path / "run", method="rfnet", data=[], preset="tiny", overrides=[],
                       resume=True, max_steps=None, max_minutes=None, console=None)


def test_resume_without_a_run(tmp_path):
    with pytest.raises(InputError, match="nothing to resume"):
        start_training(tmp_path / "none", method=None, data=[], preset="tiny", overrides=[],
                       resume=True, max_steps=None, max_minutes=None, console=None)


class Payload:
    """Any class: unpickling it would run code chosen by whoever wrote the file."""


def test_pickled_object_in_a_checkpoint_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": "contraseg.checkpoint", "x": Payload()}, path)
    with pytest.raises(InputError, match="refused") as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(InputError, match="junk.pt"):
        load_checkpoint(tmp_path / "junk.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "plain.pt")
    with pytest.raises(InputError, match="not a contraseg checkpoint"):
        load_checkpoint(tmp_path / "plain.pt")


def test_bf16_autocast_trains_on_cpu(tmp_path, phantom):
    info = train(tmp_path / "bf16", phantom, ["epochs=1", "val_every=0", "amp=bf16"])
    assert info["status"] == "finished"
    assert all(torch.isfinite(w).all() for w in weights(tmp_path / "bf16").values())


def test_amp_auto_is_decided_by_the_probe_not_the_cpu_flags(tmp_path, phantom, monkeypatch):
    """A CPU that reports native bf16 still trains in float32 when the probe finds bf16 slower
    for this method's step (engine.amp_probe; a stub of the probe's figures here)."""
    from contraseg.engine import amp_probe, distributed

    monkeypatch.setattr(distributed, "native_bf16", lambda device: True)
    slower = {"none/channels_last": {"warmup_s": 1.0, "median_s": 1.0},
              "none/contiguous": {"warmup_s": 1.2, "median_s": 1.2},
              "bf16/channels_last": {"warmup_s": 9.0, "median_s": 9.0},
              "bf16/contiguous": {"warmup_s": 20.0, "median_s": None}}
    monkeypatch.setattr(amp_probe, "probe_steps", lambda *a: slower)
    monkeypatch.setenv("CONTRASEG_CACHE_DIR", str(tmp_path / "cache"))
    info = train(tmp_path / "run", phantom, ["epochs=1", "iters_per_epoch=2", "val_every=0",
                                             "amp=auto"])
    assert info["amp"] == "none" and info["config"]["amp"] == "auto"
    assert info["amp_probe"]["native_bf16"] and info["amp_probe"]["channels_last"]


def test_one_autocast_spelling_runs_what_amp_names():
    from contraseg.engine.distributed import autocast

    cpu = torch.device("cpu")
    a, b = torch.randn(4, 4), torch.randn(4, 4)
    with autocast("none", cpu):
        assert (a @ b).dtype == torch.float32
    with autocast("bf16", cpu):
        assert (a @ b).dtype == torch.bfloat16


def test_fp16_on_cpu_is_refused(tmp_path, phantom):
    with pytest.raises(ConfigError, match="fp16"):
        train(tmp_path / "fp16", phantom, ["epochs=1", "val_every=0", "amp=fp16"])


def test_loss_goes_down_on_the_phantom(tmp_path, phantom):
    """A real (small) optimisation: the mean loss of the last epoch is below the first."""
    train(tmp_path / "run", phantom, ["epochs=6", "iters_per_epoch=4", "val_every=0",
                                       "optim.lr=3e-3"])
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert log[-1]["loss"]["total"] < log[0]["loss"]["total"]


def test_config_presets_and_overrides():
    config = load_config("unet", "paper", ["optim.lr=1e-3", "data.patch_size=[96,96,96]"])
    assert config.optim.lr == 1e-3 and config.data.patch_size == [96, 96, 96]
    assert config.epochs == 300 and config.iters_per_epoch == 150
    with pytest.raises(ConfigError, match="unknown setting"):
        load_config("unet", "paper", ["optim.lrr=1"])
    with pytest.raises(ConfigError, match="no preset"):
        load_config("unet", "slow")


def test_resume_may_extend_the_epochs(tmp_path, phantom):
    train(tmp_path / "run", phantom, ["epochs=1", "val_every=0"])
    info = start_training(tmp_path / "run", method=None, data=[], preset="tiny",
                          overrides=["epochs=2"], resume=True, max_steps=None, max_minutes=None,
                          console=None)
    assert info["status"] == "finished" and info["step"] == 4
    assert json.loads((tmp_path / "run" / "run.json").read_text())["config"]["epochs"] == 2


def test_plateau_schedule_sees_each_epochs_mean_training_loss(tmp_path, phantom):
    train(tmp_path / "run", phantom, ["epochs=6", "iters_per_epoch=2", "val_every=0",
                                       "optim.schedule=plateau", "optim.plateau_patience=0",
                                       "optim.plateau_factor=0.5", "optim.lr=1e-3"])
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    lr, best, expected = 1e-3, float("inf"), []
    for record in log:  # ReduceLROnPlateau's rule (mode min, relative threshold 1e-4)
        if record["loss"]["total"] < best * (1 - 1e-4):
            best = record["loss"]["total"]
        else:
            lr *= 0.5
        expected.append(lr)
    assert [r["lr"] for r in log] == pytest.approx(expected)
    state = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["scheduler"]
    assert state["best"] == pytest.approx(min(r["loss"]["total"] for r in log))


def test_plateau_schedule_on_a_validation_value(tmp_path, phantom):
    """plateau_metric val:dice_WT: the lr follows ReduceLROnPlateau's rule in mode max on the
    validation WT Dice of each epoch, floored at plateau_min_lr."""
    train(tmp_path / "run", phantom, ["epochs=6", "iters_per_epoch=2", "val_every=1",
                                       "data.val_fraction=0.25", "optim.schedule=plateau",
                                       "optim.plateau_patience=0", "optim.plateau_factor=0.5",
                                       "optim.lr=1e-3", "optim.plateau_min_lr=2e-4",
                                       "optim.plateau_metric=val:dice_WT"])
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    lr, best, expected = 1e-3, -float("inf"), []
    for record in log:  # mode max, relative threshold 1e-4
        if record["val"]["dice_WT"] > best * (1 + 1e-4):
            best = record["val"]["dice_WT"]
        else:
            lr = max(lr * 0.5, 2e-4)
        expected.append(lr)
    assert [r["lr"] for r in log] == pytest.approx(expected)
    state = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["scheduler"]
    assert state["best"] == pytest.approx(max(r["val"]["dice_WT"] for r in log))


@pytest.mark.parametrize("overrides, problem", [
    (["data.val_fraction=0"], "needs validation"),
    (["data.val_fraction=0.25", "optim.plateau_metric=val:dice_XX"], "reports dice_WT"),
    (["data.val_fraction=0.25", "optim.plateau_metric=dice_ET"], "expected 'loss' or"),
])
def test_a_plateau_on_validation_without_it_is_refused(tmp_path, phantom, overrides, problem):
    base = ["val_every=1", "optim.schedule=plateau", "optim.plateau_metric=val:dice_ET"]
    with pytest.raises(ConfigError, match=problem):
        train(tmp_path / "run", phantom, [*base, *overrides])


def test_a_plateau_on_validation_is_refused_for_pretraining(tmp_path, phantom):
    """Pre-training validates nothing, whatever val_fraction says: a clear error, not a crash."""
    with pytest.raises(ConfigError, match="no validation case"):
        train(tmp_path / "moco", phantom, [*TINY, "val_every=1", "data.val_fraction=0.25",
                                           "optim.schedule=plateau",
                                           "optim.plateau_metric=val:dice_ET"],
              method="swin-moco-pretrain")


def test_introvae_trains_on_the_phantoms_normal_brains(tmp_path, phantom):
    """A generator run: unlabelled healthy T1 (the phantom's `-normal-t1n`), 2D slices, PSNR /
    SSIM validation, a checkpoint that loads back without a label convention."""
    info = train(tmp_path / "vae", phantom, ["epochs=2", "val_every=1"], method="introvae")
    assert info["status"] == "finished"
    run = json.loads((tmp_path / "vae" / "run.json").read_text())
    assert run["modalities"] == ["t1"] and run["label_convention"] is None
    log = [json.loads(line) for line in (tmp_path / "vae" / "log.jsonl").read_text().splitlines()]
    assert set(log[-1]["loss"]) == {"kl", "margin", "adversarial", "reconstruction", "total"}
    assert set(log[-1]["val"]) == {"psnr", "ssim"} and math.isfinite(log[-1]["val"]["psnr"])
    method, _ = load_method(tmp_path / "vae")
    assert method.kind == "generator"
    with pytest.raises(InputError, match="generator run"):
        Predictor.from_run(tmp_path / "vae", device="cpu")


def test_a_generator_learns_from_the_tumour_free_slices_of_labelled_cases(tmp_path, phantom):
    """Tumour cases without a healthy twin (real scans): the generator keeps each case's label
    only to draw slices that hold no tumour."""
    from contraseg.engine.train import Trainer

    cases = sorted(p.name for p in phantom.iterdir() if p.is_dir())[:2]
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "contraseg.json").write_text(json.dumps({
        "root": str(phantom), "modalities": ["t1"], "labels": "brats2023",
        "files": {"images": {"t1": "{case}/{case}-t1n.nii.gz"},
                  "label": "{case}/{case}-seg.nii.gz"},
        "cases": cases}))
    config = load_config("introvae", "tiny", ["data.val_fraction=0"])
    trainer = Trainer(config, [tmp_path / "data"], tmp_path / "vae")
    labels = [case.label for case in trainer.data.train]
    assert all(label.any() for label in labels)  # the tumour is known ...
    rng = np.random.default_rng(0)
    for _ in range(40):  # ... and never sampled
        assert not trainer.sampler.sample(rng, 2)["target"].any()
    for case in trainer.data.train:
        tumour_slices = np.flatnonzero(case.label.any(axis=(0, 1)))
        assert not set(trainer.sampler.free_starts[case.case_id]) & set(tumour_slices)


def test_clfc_refuses_a_generator_trained_on_another_grid(tmp_path, phantom):
    train(tmp_path / "vae", phantom, ["epochs=1", "val_every=0",
                                      "data.target_spacing=[2.0,2.0,2.0]"], method="introvae")
    with pytest.raises(ConfigError, match="2x2x2 mm grid, this run samples the input grid"):
        train(tmp_path / "clfc", phantom, [f"normal_run={tmp_path / 'vae'}"], method="clfc",
              max_steps=1)
    assert not (tmp_path / "clfc" / "run.json").exists()


def test_normal_writes_the_pseudo_normal_t1_on_the_input_grid(tmp_path, phantom):
    from typer.testing import CliRunner

    from contraseg.cli import app

    train(tmp_path / "vae", phantom, ["epochs=1", "val_every=0"], method="introvae")
    t1 = next((phantom / "Phantom-00000").glob("*-t1n.nii.gz"))
    out = tmp_path / "pseudo.nii.gz"
    result = CliRunner().invoke(app, ["normal", "--run", str(tmp_path / "vae"), "--t1", str(t1),
                                      "--out", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    import nibabel as nib
    import numpy as np
    src, written = nib.load(t1), nib.load(out)
    assert written.shape == src.shape and np.allclose(written.affine, src.affine)
    assert np.isfinite(written.get_fdata()).all() and written.get_fdata().std() > 0
    bad = CliRunner().invoke(app, ["normal", "--run", str(tmp_path / "vae"), "--t1",
                                   str(tmp_path / "missing.nii.gz"), "--out",
                                   str(tmp_path / "x.nii.gz")])
    assert bad.exit_code != 0 and "missing.nii.gz" in bad.output
    assert not (tmp_path / "x.nii.gz").exists()


def test_clfc_trains_with_a_normal_run_and_caches_the_pseudo_normals(tmp_path, phantom):
    """`normal_run` attaches a trained introvae: its architecture and path are stored in the
    run, its weights copied into the segmenter (the run predicts after the VAE folder is gone),
    and each training case's pseudo-normals are computed once and read back by the next run."""
    import shutil

    import nibabel as nib

    train(tmp_path / "vae", phantom, ["epochs=1", "val_every=0"], method="introvae")
    cache = tmp_path / "cache"
    sets = ["epochs=2", "val_every=1", f"normal_run={tmp_path / 'vae'}",
            f"data.cache_dir={cache}"]
    assert train(tmp_path / "clfc", phantom, sets, method="clfc")["status"] == "finished"
    run = json.loads((tmp_path / "clfc" / "run.json").read_text())
    generator = run["config"]["model"]["generator"]
    # the VAE did not validate: its last weights are attached (it has no best.pt)
    assert generator["method"] == "introvae" and generator["run"].endswith("last.pt")
    assert not (tmp_path / "vae" / "checkpoints" / "best.pt").exists()
    assert run["config"]["normal_run"] == str(tmp_path / "vae")
    files = sorted((cache / "case-inputs").glob("*.npy"))
    assert len(files) == len(run["split"]["train"])
    stamps = [f.stat().st_mtime_ns for f in files]
    train(tmp_path / "again", phantom, sets, method="clfc", max_steps=1)
    assert [f.stat().st_mtime_ns for f in files] == stamps
    baseline1 = train(tmp_path / "b1", phantom, [*sets, "model.normal_network=false"],
                      method="clfc", max_steps=1)  # the paper's Baseline-1 ignores the VAE
    assert baseline1["status"] == "stopped"
    assert not any(k.startswith("generator.") for k in weights(tmp_path / "b1"))
    vae = load_checkpoint(tmp_path / "vae" / "checkpoints" / "last.pt")["model"]
    clfc = weights(tmp_path / "clfc")
    assert all(torch.equal(clfc[f"generator.{k}"], v) for k, v in vae.items())
    shutil.rmtree(tmp_path / "vae")
    case = phantom / "Phantom-00001"
    files = {m: case / f"{case.name}-{m}.nii.gz" for m in ("t1n", "t1c", "t2w", "t2f")}
    out = Predictor.from_run(tmp_path / "clfc", device="cpu").predict_files(
        files, tmp_path / "pred.nii.gz")
    assert nib.load(out).shape == nib.load(files["t1n"]).shape


def test_normal_run_refusals(tmp_path, phantom):
    with pytest.raises(ConfigError, match="normal_run"):
        train(tmp_path / "c", phantom, [*TINY, "model.generator=null"], method="clfc")
    assert not (tmp_path / "c").exists()
    with pytest.raises(InputError, match="no such run"):
        train(tmp_path / "d", phantom, [*TINY, f"normal_run={tmp_path / 'nothing'}"],
              method="clfc")
    with pytest.raises(ConfigError, match="does not use"):
        train(tmp_path / "e", phantom, [*TINY, f"normal_run={tmp_path}"])
    assert not (tmp_path / "d").exists() and not (tmp_path / "e").exists()


def test_folds_are_deterministic_balanced_and_disjoint():
    from contraseg.engine.folds import fold_of, fold_split

    ids = [f"d/c{i:02d}" for i in range(11)]
    assignment = fold_of(ids, 5, seed=0)
    assert assignment == fold_of(list(reversed(ids)), 5, seed=0)
    sizes = sorted(list(assignment.values()).count(k) for k in range(5))
    assert sizes == [2, 2, 2, 2, 3]
    assert assignment != fold_of(ids, 5, seed=1)
    tests = []
    for k in range(5):
        split = fold_split(ids, k, 5, 0.2, seed=0)
        assert not set(split["test"]) & (set(split["train"]) | set(split["val"]))
        assert sorted(split["train"] + split["val"] + split["test"]) == ids
        tests += split["test"]
    assert sorted(tests) == ids
    with pytest.raises(ConfigError, match="folds"):
        fold_of(ids[:3], 5, seed=0)


def test_cross_validation_trains_every_fold_and_evaluates_each_case_once(tmp_path, phantom):
    import csv

    from contraseg.engine.evaluate import evaluate_run

    info = train(tmp_path / "cv", phantom, ["epochs=1", "val_every=0"], folds=2)
    assert info["status"] == "finished" and info["fold"] == {"index": 1, "folds": 2}
    splits = [json.loads((tmp_path / "cv" / f"fold-{k}" / "run.json").read_text())["split"]
              for k in range(2)]
    assert not set(splits[0]["test"]) & set(splits[1]["test"])
    assert sorted(splits[0]["test"] + splits[1]["test"]) == sorted(
        f"ph/Phantom-{i:05d}" for i in range(4))
    assert set(splits[0]["test"]) == set(splits[1]["train"] + splits[1]["val"])
    evaluate_run(tmp_path / "cv", phantom, tmp_path / "report", subsets="full", device="cpu",
                 overlays=0)
    with open(tmp_path / "report" / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert sorted({r["case"] for r in rows}) == [f"Phantom-{i:05d}" for i in range(4)]
    assert len(rows) == 4 * 3  # each case once, three regions
    # one fold alone, and resuming a finished cross-validation trains nothing new
    train(tmp_path / "one", phantom, ["epochs=1", "val_every=0"], folds=2, fold=1)
    assert not (tmp_path / "one" / "fold-0").exists()
    assert_same_weights(tmp_path / "one" / "fold-1", tmp_path / "cv" / "fold-1")
    with pytest.raises(ConfigError, match="--fold needs --folds"):
        train(tmp_path / "x", phantom, TINY, fold=1)


def test_resuming_folds_restarts_one_killed_before_its_first_checkpoint(tmp_path, phantom):
    """A cross-validation killed while a fold was starting (run.json written, no checkpoint
    yet) resumes by starting that fold again, and trains it as a fresh run would."""
    train(tmp_path / "cv", phantom, ["epochs=1", "val_every=0"], folds=2, fold=0)
    (tmp_path / "cv" / "fold-1").mkdir()
    (tmp_path / "cv" / "fold-1" / "run.json").write_text('{"status": "running"}')
    info = train(tmp_path / "cv", phantom, ["epochs=1", "val_every=0"], folds=2, resume=True)
    assert info["status"] == "finished" and info["fold"] == {"index": 1, "folds": 2}
    fresh = train(tmp_path / "fresh", phantom, ["epochs=1", "val_every=0"], folds=2, fold=1)
    assert fresh["step"] == info["step"]
    assert_same_weights(tmp_path / "cv" / "fold-1", tmp_path / "fresh" / "fold-1")


def test_whole_tumour_only_training_and_evaluation(tmp_path, phantom):
    import csv

    import numpy as np

    from contraseg.data.labels import CONVENTIONS, whole_tumour
    from contraseg.engine.evaluate import evaluate_run

    wt = whole_tumour(CONVENTIONS["brats2023"])
    assert wt.to_canonical(np.array([0, 1, 2, 3])).tolist() == [0, 1, 1, 1]
    assert wt.to_raw(np.array([0, 1])).tolist() == [0, 1] and whole_tumour(wt) is wt
    train(tmp_path / "wt", phantom, [*TINY, "data.whole_tumour=true"])
    run = json.loads((tmp_path / "wt" / "run.json").read_text())
    assert run["label_convention"]["class_names"] == ["background", "tumour"]
    method, _ = load_method(tmp_path / "wt")
    assert method.num_classes == 2
    evaluate_run(tmp_path / "wt", phantom, tmp_path / "report", subsets="full", device="cpu",
                 overlays=0)
    with open(tmp_path / "report" / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert {r["region"] for r in rows} == {"WT"} and len(rows) == 4
    assert all(0.0 <= float(r["dice"]) <= 1.0 for r in rows)
    # mmseg-style per-case means over both classes (background included): with background IoU
    # in [0, 1], mIoU lies between IoU_tumour / 2 and (1 + IoU_tumour) / 2
    for r in rows:
        iou, miou = float(r["iou"]), float(r["case_miou"])
        assert iou / 2 - 1e-9 <= miou <= (1 + iou) / 2 + 1e-9
        assert 0.0 <= float(r["case_mpa"]) <= 1.0


def test_pretrain_then_fine_tune_from_the_pretraining_run(tmp_path, phantom):
    """`contraseg pretrain --method swin-moco` on the phantom's images (labels unused), then
    `contraseg train --method swin-moco --init PRETRAIN_RUN`: the encoder is loaded, the decoder
    copied from it, and run.json says so."""
    from typer.testing import CliRunner

    from contraseg.cli import app

    runner = CliRunner()
    result = runner.invoke(app, ["pretrain", "--method", "swin-moco", "--data", str(phantom),
                                 "--out", str(tmp_path / "moco"), "--preset", "tiny"])
    assert result.exit_code == 0, result.output
    run = json.loads((tmp_path / "moco" / "run.json").read_text())
    assert run["method"] == "swin-moco-pretrain" and run["label_convention"] is None
    assert len(run["split"]["train"]) == 4 and run["split"]["val"] == []
    log = [json.loads(line) for line in (tmp_path / "moco" / "log.jsonl").read_text().splitlines()]
    assert all(math.isfinite(r["loss"]["moco"]) for r in log)
    pre = weights(tmp_path / "moco")
    # the momentum encoder trails the encoder (updated after each step, never equal)
    key = "layers.0.blocks.0.attn.qkv.weight"
    assert not torch.equal(pre[f"encoder.{key}"], pre[f"momentum_encoder.{key}"])
    result = runner.invoke(app, ["train", "--method", "swin-moco", "--data", str(phantom),
                                 "--out", str(tmp_path / "ft"), "--preset", "tiny",
                                 "--init", str(tmp_path / "moco"), "--set", "val_every=0"])
    assert result.exit_code == 0, result.output
    init = json.loads((tmp_path / "ft" / "run.json").read_text())["init"]
    assert init["loaded"] > 10 and init["decoder_copied"]
    assert init["source"] == str((tmp_path / "moco").resolve())
    with pytest.raises(InputError, match="train --init RUN"):
        Predictor.from_run(tmp_path / "moco", device="cpu")
    bad = runner.invoke(app, ["pretrain", "--method", "unet", "--data", str(phantom),
                              "--out", str(tmp_path / "x")])
    assert bad.exit_code != 0 and "no pre-training stage" in bad.output
    refused = runner.invoke(app, ["train", "--method", "unet", "--data", str(phantom),
                                  "--out", str(tmp_path / "y"), "--preset", "tiny",
                                  "--init", str(tmp_path / "moco")])
    assert refused.exit_code != 0 and "does not take --init" in refused.output


def test_init_files_that_hold_no_weights_are_refused(tmp_path):
    from contraseg.engine.checkpoint import read_init_weights

    (tmp_path / "notes.pt").write_bytes(b"not a torch file")
    with pytest.raises(InputError, match="notes.pt"):
        read_init_weights(tmp_path / "notes.pt")
    torch.save({"epoch": 3}, tmp_path / "meta.pt")
    with pytest.raises(InputError, match="no state dict"):
        read_init_weights(tmp_path / "meta.pt")
    torch.save({"state_dict": {"module.a": torch.ones(2)}}, tmp_path / "wrapped.pt")
    assert list(read_init_weights(tmp_path / "wrapped.pt")) == ["a"]
    with pytest.raises(InputError, match="no such file"):
        read_init_weights(tmp_path / "missing.pt")


def test_a_time_budget_fits_the_schedule_to_the_measured_step_time(tmp_path, phantom):
    """budget_minutes: after 20 timed steps, the step count is set from the measured step time
    so the poly schedule ends with the budget (not rounded to whole epochs: the last one may be
    partial); run.json records the fit, the lr follows the fitted schedule, and a resumed run
    keeps the fitted length instead of timing again."""
    sets = ["val_every=0", "epochs=1000", "iters_per_epoch=10", "budget_minutes=0.5"]
    info = train(tmp_path / "run", phantom, sets, max_steps=25)
    budget = info["budget"]
    assert info["status"] == "stopped" and info["step"] == 25
    assert budget["minutes"] == 0.5 and budget["timed_steps"] == 17
    total = budget["total_steps"]
    longest = 20 + int(30.0 / (budget["step_seconds"] * 1.03))  # 30 s, nothing spent yet
    assert 30 <= total <= longest
    assert info["config"]["epochs"] == budget["epochs"] == -(-total // 10) != 1000
    resumed = train(tmp_path / "run", phantom, [], resume=True, max_steps=30)
    assert resumed["step"] == 30 and resumed["budget"] == budget
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    for record in log[1:]:  # tiny preset: lr 1e-3, poly 0.9 over the fitted length
        assert record["lr"] == pytest.approx(1e-3 * (1 - record["step"] / total) ** 0.9)
    assert [r["step"] for r in log] == [10, 20, 30]


def fake_clock(monkeypatch, step_seconds) -> tuple[list[float], list[int]]:
    """The trainer's and the budget's clock made fake: drawing the n-th batch (n from 1)
    advances it by `step_seconds(n)` seconds, whatever the machine's speed or load. Returns
    the clock ([seconds]) and the batches drawn so far ([n]), both resettable."""
    from types import SimpleNamespace

    from contraseg.data.patches import PatchSampler

    clock, drawn, sample = [0.0], [0], PatchSampler.sample

    def timed(self, rng, batch_size, out=None):
        drawn[0] += 1
        clock[0] += step_seconds(drawn[0])
        return sample(self, rng, batch_size, out)

    monkeypatch.setattr(PatchSampler, "sample", timed)
    fake = SimpleNamespace(monotonic=lambda: clock[0])
    monkeypatch.setattr("contraseg.engine.train.time", fake)
    monkeypatch.setattr("contraseg.engine.budget.time", fake)  # the budget's pace
    return clock, drawn


def test_a_budget_holds_when_the_steps_slow_down_after_the_fit(tmp_path, phantom, monkeypatch):
    """The first steps' pace alone would overrun a budget when later steps cost more (other
    work on the machine, checkpoints): the end of the schedule follows the pace of the last
    20 steps, so the run still ends with its budget, within one step. The trainer's clock is a
    fake one that each step advances by 0.01 s for the first 25 steps, then by 0.3 s (no
    dependence on the machine's speed or load)."""
    fake_clock(monkeypatch, lambda n: 0.01 if n <= 25 else 0.3)
    sets = ["val_every=0", "epochs=1000", "iters_per_epoch=5", "budget_minutes=0.25"]
    info = train(tmp_path / "run", phantom, sets)
    budget = info["budget"]
    assert info["status"] == "finished" and budget["refits"] >= 1
    assert budget["step_seconds"] == pytest.approx(0.3)  # the pace now, not the first 0.01 s
    assert info["step"] == budget["total_steps"] < 100
    assert budget["epochs"] == -(-info["step"] // 5)  # the last epoch partial where it ends so
    assert 15 - 0.31 < info["train_seconds"] <= 15 + 1e-6  # the budget, within one step


def test_a_budget_is_used_when_the_first_steps_were_slow(tmp_path, phantom, monkeypatch):
    """The mirror case: the machine is busy while the schedule is first fitted (1 s a step for
    the first 25 steps), then quiet (0.125 s: exact in binary, so the resumed run's arithmetic
    is the same as the uninterrupted run's). A schedule sized once from the busy steps would
    stop after about a third of the budget; re-fitted to the recent pace, the run ends within
    its budget and uses at least 90 % of it. A resume keeps the refitted schedule and ends at
    the same step. Fake clock, as above."""
    clock, drawn = fake_clock(monkeypatch, lambda n: 1.0 if n <= 25 else 0.125)
    sets = ["val_every=0", "epochs=1000", "iters_per_epoch=10", "budget_minutes=0.75"]
    first_fit = 20 + int((45 - 20) / (1.0 * 1.03))  # the steps the busy pace alone would give
    info = train(tmp_path / "run", phantom, sets)
    budget = info["budget"]
    assert info["status"] == "finished" and budget["refits"] >= 2
    assert budget["step_seconds"] == pytest.approx(0.125)
    assert info["step"] == budget["total_steps"] > 2 * first_fit
    assert 0.9 * 45 <= info["train_seconds"] <= 45 + 1e-6

    stopped = tmp_path / "stopped"  # the same run, stopped at step 60 and resumed
    clock[0], drawn[0] = 0.0, 0
    train(stopped, phantom, sets, max_steps=60)
    resumed = train(stopped, phantom, [], resume=True)
    assert resumed["step"] == info["step"]
    assert 0.9 * 45 <= resumed["train_seconds"] <= 45 + 1e-6


def test_snapshots_every_n_minutes_of_training_form_a_learning_curve(tmp_path, phantom,
                                                                     monkeypatch):
    """keep_every_minutes=1 keeps the weights as checkpoints/minute-M.pt each time training
    passes a whole minute, counting on across a resume; `--which minute-M` loads one. The
    trainer's clock is a fake one that each step advances by 25 s."""
    from contraseg.engine.checkpoint import find_checkpoint

    fake_clock(monkeypatch, lambda n: 25.0)
    sets = ["val_every=0", "epochs=1", "iters_per_epoch=12", "keep_every_minutes=1"]
    train(tmp_path / "run", phantom, sets, max_steps=5)  # 125 s: minutes 1 and 2
    kept = tmp_path / "run" / "checkpoints"
    assert sorted(p.stem for p in kept.glob("minute-*.pt")) == ["minute-1", "minute-2"]
    assert load_checkpoint(kept / "minute-1.pt")["step"] == 3  # 75 s: the first past 60 s
    train(tmp_path / "run", phantom, [], resume=True)  # to step 12, 300 s
    assert sorted(p.stem for p in kept.glob("minute-*.pt")) == [
        "minute-1", "minute-2", "minute-3", "minute-4", "minute-5"]
    assert load_checkpoint(kept / "minute-5.pt")["step"] == 12
    assert find_checkpoint(tmp_path / "run", "minute-4") == kept / "minute-4.pt"
    with pytest.raises(InputError, match="no checkpoints/minute-9.pt .kept: minute-1, minute-2"):
        find_checkpoint(tmp_path / "run", "minute-9")
    with pytest.raises(ConfigError, match="minute-M"):
        find_checkpoint(tmp_path / "run", "minutes-4")
    with pytest.raises(ConfigError, match="keep_every_minutes 0.5"):
        load_config("unet", "tiny", ["keep_every_minutes=0.5"])
