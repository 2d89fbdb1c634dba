"""Methods from outside contraseg: the example plugin (installed by `make test`), methods named
`package.module:Class`, and broken plugins (one warning, everything else works)."""

from __future__ import annotations

import json
import textwrap
from importlib import metadata
from pathlib import Path

import pytest

from contraseg.errors import ConfigError
from contraseg.models.registry import ENTRY_POINT_GROUP, get_entry, list_methods
from tests.conftest import QUIET, REPO, STARTS_PROCESSES
from tests.runners import cli, cli_process, process_env

EXAMPLE = REPO / "examples" / "plugin-method"


def _example_installed() -> None:
    names = {point.name for point in metadata.entry_points(group=ENTRY_POINT_GROUP)}
    if "example-fcn" not in names:
        pytest.fail(f"the example plugin is not installed in this environment: `make test` "
                    f"installs it (pip install --no-deps --no-build-isolation -e {EXAMPLE})")


def test_the_example_plugin_is_found_by_its_entry_point():
    _example_installed()
    entry = get_entry("example-fcn")
    assert "example-fcn" in list_methods(kind="segmentation")
    assert entry.source.to_dict() == {"module": "contraseg_example.method",
                                      "distribution": "contraseg-example-plugin",
                                      "version": "0.1.0", "entry_point": "example-fcn"}
    assert not entry.source.builtin
    listed = cli("methods")
    assert listed.returncode == 0
    row, described = [line for line in listed.stdout.splitlines()
                       if line.startswith("example-fcn")]
    assert row.split() == ["example-fcn", "segmentation", "fast,", "tiny", "-"]
    assert described.startswith("example-fcn [contraseg-example-plugin 0.1.0]: A small FCN")


@STARTS_PROCESSES
def test_the_example_plugin_trains_predicts_evaluates_and_exports(tmp_path, make_phantom):
    """The CLI round trip, each verb its own process: what a plugin's user does."""
    _example_installed()
    data, run = make_phantom(cases=4, size=32, seed=3), tmp_path / "run"
    steps = [
        ("train", "--method", "example-fcn", "--preset", "tiny", "--data", str(data), "--out",
         str(run), *[arg for q in QUIET for arg in ("--set", q)]),
        ("predict", "--run", str(run), "--data", str(data), "--out", str(tmp_path / "pred/")),
        ("evaluate", "--run", str(run), "--data", str(data), "--out", str(tmp_path / "report"),
         "--subsets", "full,flair", "--overlays", "0"),
        ("export", "--run", str(run), "--out", str(tmp_path / "model.pt")),
    ]
    for args in steps:
        done = cli_process(*args)
        assert done.returncode == 0, f"{args[0]}: {done.stderr}"
    info = json.loads((run / "run.json").read_text())
    assert info["method"] == "example-fcn"
    assert info["method_source"]["distribution"] == "contraseg-example-plugin"
    assert info["method_source"]["version"] == "0.1.0"
    assert len(list((tmp_path / "pred").glob("*.nii.gz"))) == 4
    assert (tmp_path / "report" / "metrics.csv").is_file()
    assert (tmp_path / "model.pt").stat().st_size > 0


LOCAL_METHOD = '''
from dataclasses import dataclass

import torch
from contraseg.models import Method, mask_missing, register
from torch import nn


@dataclass
class Settings:
    width: int = 4


@register("local-linear", Settings, presets=__file__.replace(".py", ".yaml"))
class LocalLinear(Method):
    """A per-voxel linear model, defined outside any installed package."""

    def __init__(self, modalities, num_classes, config, loss_weights=None):
        super().__init__(modalities, num_classes, loss_weights)
        self.conv = nn.Conv3d(self.num_modalities, num_classes, 1)

    def forward(self, images, available):
        return self.conv(mask_missing(images[:, : self.num_modalities], available))

    def losses(self, batch):
        logits = self(batch.images, batch.available)
        return {"seg": torch.nn.functional.cross_entropy(logits.float(), batch.target)}
'''
LOCAL_PRESETS = """
tiny:
  data: {patch_size: [16, 16, 16], batch_size: 2}
  epochs: 1
  iters_per_epoch: 2
  val_every: 0
"""


@STARTS_PROCESSES
def test_a_method_named_by_module_and_class_trains_and_predicts_in_new_processes(
        tmp_path, make_phantom):
    """`--method local_plugin:LocalLinear`: the run records the module, so a later process
    that has never heard of it (predict) imports it again."""
    code = tmp_path / "code"
    code.mkdir()
    (code / "local_plugin.py").write_text(textwrap.dedent(LOCAL_METHOD))
    (code / "local_plugin.yaml").write_text(LOCAL_PRESETS)
    data, run = make_phantom(cases=4, size=32, seed=3), tmp_path / "run"
    env = process_env()
    env["PYTHONPATH"] = f"{env['PYTHONPATH']}:{code}"
    import subprocess
    import sys

    def contraseg(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "contraseg", *args], capture_output=True,
                              text=True, env=env)

    trained = contraseg("train", "--method", "local_plugin:LocalLinear", "--preset", "tiny",
                        "--data", str(data), "--out", str(run),
                        *[arg for q in QUIET for arg in ("--set", q)])
    assert trained.returncode == 0, trained.stderr
    info = json.loads((run / "run.json").read_text())
    assert info["method"] == "local-linear"
    assert info["method_source"] == {"module": "local_plugin", "distribution": None,
                                     "version": None, "entry_point": None}
    predicted = contraseg("predict", "--run", str(run), "--data", str(data), "--out",
                          str(tmp_path / "pred/"))
    assert predicted.returncode == 0, predicted.stderr
    resumed = contraseg("train", "--out", str(run), "--resume", "--set", "epochs=2")
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((run / "run.json").read_text())["step"] == 4


def test_module_and_class_names_are_checked_in_one_line():
    with pytest.raises(ConfigError, match=r"cannot import no_such_module \(ModuleNotFound"):
        get_entry("no_such_module:Thing")
    with pytest.raises(ConfigError, match="module contraseg.models.unet has no attribute 'Nope'"):
        get_entry("contraseg.models.unet:Nope")
    with pytest.raises(ConfigError, match="UNetConfig is not a registered method"):
        get_entry("contraseg.models.unet:UNetConfig")
    assert get_entry("contraseg.models.unet:UNet").name == "unet"


def _fake_distribution(site: Path, name: str, entry_points: str) -> None:
    """A distribution installed in `site` (its .dist-info only), with these entry points."""
    info = site / f"{name}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(entry_points)


@STARTS_PROCESSES
def test_a_broken_plugin_is_one_warning_and_the_rest_works(tmp_path):
    site = tmp_path / "site"
    _fake_distribution(site, "broken-plugin", f"[{ENTRY_POINT_GROUP}]\n"
                       "broken = broken_plugin_module\n")
    (site / "broken_plugin_module.py").write_text("raise RuntimeError('a bug in the plugin')\n")
    env = process_env()
    env["PYTHONPATH"] = f"{env['PYTHONPATH']}:{site}"
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "contraseg", "methods"], capture_output=True,
                          text=True, env={**env, "COLUMNS": "200"})
    assert done.returncode == 0, done.stderr
    warnings = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(warnings) == 1, done.stderr
    assert warnings[0].startswith("warning: plugin broken (broken-plugin 1.0)")
    assert "RuntimeError: a bug in the plugin" in warnings[0]
    assert any(line.startswith("unet ") for line in done.stdout.splitlines())


def test_a_method_without_presets_is_listed_and_refused_by_name(monkeypatch):
    from dataclasses import dataclass

    from contraseg.engine.config import load_config, preset_names
    from contraseg.models import Method, register, registry

    @dataclass
    class Nothing:
        pass

    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))

    @register("no-presets", Nothing)
    class NoPresets(Method):
        """A method that ships no presets."""

    assert preset_names("no-presets") == []
    with pytest.raises(ConfigError, match="no preset 'fast' \\(presets: none shipped\\)"):
        load_config("no-presets", "fast")
    listed = cli("methods")
    assert listed.returncode == 0 and "no-presets" in listed.stdout
