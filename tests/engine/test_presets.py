"""The `paper` presets: every value names its source, and the training protocol they set.

- Each value line of a `paper` preset carries a comment naming where the value comes from:
  the paper ("paper Sec. 3", "paper Eq. 9"), the authors' released code ("authors' code
  <file>") or us ("ours: <why>"). The presets are block style, one value per line, so the
  line-based check below sees every value.
- The papers train on the whole training split and report the last epoch: the `paper` presets
  hold no validation cases out (no best checkpoint is chosen on them). DCL-MANet's is the
  exception: its released schedule watches the validation ET Dice, so it holds a fifth out.
- RFNet's released code, which DC-Seg extends, crops uniformly at random (no foreground
  oversampling): their `paper` presets draw crops without favouring labelled voxels.
"""

from __future__ import annotations

import re
from importlib import resources

import numpy as np
import pytest
import yaml

from contraseg.data.patches import PatchSampler
from contraseg.data.train_case import TrainCase
from contraseg.engine.config import load_config
from contraseg.engine.folds import split_cases
from contraseg.engine.prepare import prepare_data
from contraseg.models.registry import build_method, get_entry

PAPER_METHODS = ["unet", "rfnet", "dc-seg", "dcl-manet", "clfc", "swin-moco",
                 "swin-moco-pretrain", "introvae"]
SEGMENTATION_METHODS = ["unet", "rfnet", "dc-seg", "dcl-manet", "clfc", "swin-moco"]
UNIFORM_CROP_METHODS = ["rfnet", "dc-seg"]  # RFNet's RandCrop3D; DC-Seg extends RFNet's code
# every paper preset but DCL-MANet's (its released plateau schedule watches validation cases)
WHOLE_SPLIT_METHODS = [m for m in PAPER_METHODS if m != "dcl-manet"]
SOURCE = re.compile(r"\bpaper\b|authors' code \S|ours: \S")


def preset_text(method: str) -> str:
    return resources.files("contraseg.configs").joinpath(f"{method}.yaml").read_text()


def yaml_files() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("contraseg.configs").iterdir()
                  if p.name.endswith(".yaml"))


def unsourced_lines(text: str, preset: str = "paper") -> tuple[int, list[str]]:
    """(number of value lines, offending lines) of the top-level `preset` block of a YAML text.

    A value line is `key: value` with a non-empty value (a one-line flow list such as
    `[80, 80, 80]` is one value); `key:` alone opens a section. A value line must carry a
    comment naming a source ("paper ...", "authors' code <file>", "ours: <why>"). Flow
    mappings (`{...}`), flow lists spread over lines and lines that are not `key: value`
    are offences too: the block must hold one value per line."""
    values, bad, inside = 0, [], False
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        body, _, comment = line.partition(" #")
        if not line[0].isspace():  # a top-level key: the start of a preset
            key, _, value = body.partition(":")
            inside = key.strip() == preset
            if inside and value.strip():
                bad.append(f"{number}: {line}  (the preset is not a block mapping)")
            continue
        if not inside:
            continue
        key, sep, value = body.strip().partition(":")
        value = value.strip()
        if not sep or not re.fullmatch(r"[A-Za-z_][\w.-]*", key):
            bad.append(f"{number}: {line}  (not a `key: value` line)")
            continue
        if not value:
            continue  # a section such as `model:`
        values += 1
        if "{" in value or "}" in value or value.count("[") != value.count("]"):
            bad.append(f"{number}: {line}  (flow mapping or split flow list: one value a line)")
        elif not SOURCE.search(comment):
            bad.append(f"{number}: {line}  (no source comment)")
    return values, bad


def leaf_count(node) -> int:
    """Values of a loaded YAML mapping, a list counting as one value."""
    if isinstance(node, dict):
        return sum(leaf_count(v) for v in node.values())
    return 1


def test_the_checker_flags_missing_sources_and_flow_mappings():
    good = ("paper:\n  model:\n    depth: 4  # authors' code RFNet models.py\n"
            "  data:\n    patch_size: [80, 80, 80]  # paper Sec. 3: 80^3\n"
            "  epochs: 300  # ours: the budget\nfast:\n  model: {depth: 2}\n")
    assert unsourced_lines(good) == (3, [])
    missing = good.replace("  # ours: the budget", "")
    flow = good.replace("  model:\n    depth: 4  # authors' code RFNet models.py\n",
                        "  model: {depth: 4}  # authors' code RFNet models.py\n")
    split = good.replace("[80, 80, 80]  # paper Sec. 3: 80^3",
                         "[80,  # paper Sec. 3\n      80, 80]  # paper Sec. 3")
    vague = good.replace("# ours: the budget", "# we chose it")
    for text in (missing, flow, split, vague):
        assert unsourced_lines(text)[1], text


def test_every_known_method_has_a_paper_preset_file():
    assert set(PAPER_METHODS) <= set(yaml_files())


@pytest.mark.parametrize("method", yaml_files())
def test_every_paper_value_names_its_source(method):
    text = preset_text(method)
    values, bad = unsourced_lines(text)
    assert not bad, f"{method}.yaml `paper` lines without a source:\n" + "\n".join(bad)
    # one value per line: the checker saw every value YAML loads from the preset
    assert values == leaf_count(yaml.safe_load(text)["paper"]) > 0


@pytest.mark.parametrize("method", [m for m in yaml_files() if "cpu" in yaml.safe_load(
    preset_text(m))])
def test_every_cpu_preset_value_says_why(method):
    """The real-scan `cpu` presets state each value's basis the same way."""
    text = preset_text(method)
    values, bad = unsourced_lines(text, "cpu")
    assert not bad, f"{method}.yaml `cpu` lines without a basis:\n" + "\n".join(bad)
    assert values == leaf_count(yaml.safe_load(text)["cpu"]) > 0


@pytest.mark.parametrize("method", WHOLE_SPLIT_METHODS)
def test_paper_presets_train_on_the_whole_split(method):
    config = load_config(method, "paper")
    assert config.data.val_fraction == 0
    ids = [f"case{i:03d}" for i in range(40)]
    for seed in (0, 1, 7):
        train, val = split_cases(ids, config.data.val_fraction, seed)
        assert train == ids and val == []
    # the same preset with the default held-out share would keep cases out of training
    assert split_cases(ids, 0.2, 0)[1]


@pytest.fixture(scope="module")
def phantom(make_phantom):
    return make_phantom(cases=5, size=24, seed=2)


@pytest.mark.parametrize("method", WHOLE_SPLIT_METHODS)
def test_the_engine_trains_paper_presets_on_every_case(method, phantom, tmp_path_factory):
    """prepare_data (what `contraseg train` runs) with the paper preset: no case held out, so
    no validation runs and no best.pt exists: evaluation falls back to the last weights."""
    config = load_config(method, "paper")
    data = prepare_data(config, [phantom], tmp_path_factory.getbasetemp() / "preset-cache",
                        kind=get_entry(method).cls.kind)
    assert data.split["val"] == [] and not data.val
    assert len(data.train) == len(data.split["train"]) == 5


def test_the_dcl_manet_paper_preset_validates_for_its_schedule(phantom, tmp_path_factory):
    """Its plateau watches the validation ET Dice (released code): one of the 5 cases is held
    out and validated after every epoch."""
    config = load_config("dcl-manet", "paper")
    data = prepare_data(config, [phantom], tmp_path_factory.getbasetemp() / "preset-cache",
                        kind="segmentation")
    assert len(data.split["val"]) == len(data.val) == 1 and len(data.train) == 4
    assert config.optim.plateau_metric == "val:dice_ET" and config.val_every == 1


def single_voxel_case(size: int = 24, voxel: int = 12) -> TrainCase:
    label = np.zeros((size,) * 3, np.uint8)
    label[voxel, voxel, voxel] = 1
    image = np.random.default_rng(0).standard_normal((1, *label.shape)).astype(np.float32)
    return TrainCase("one-voxel", image, label, np.array([True]), np.argwhere(label > 0))


def hit_fraction(sampler: PatchSampler, draws: int, seed: int = 0) -> float:
    rng = np.random.default_rng(seed)
    return float(np.mean([sampler.sample_one(rng)["target"].any() for _ in range(draws)]))


@pytest.mark.parametrize("method", UNIFORM_CROP_METHODS)
def test_paper_crops_do_not_favour_labelled_voxels(method):
    """A 24^3 volume labelled at one central voxel, 8^3 crops. A uniform crop start (over the
    17 valid starts per axis, 8 of which cover the voxel) contains it with probability
    (8/17)^3 = 0.10; a crop centred on a labelled voxel always does, so a sampler with the
    engine's default foreground share (0.33) would contain it about 40% of the time."""
    case, patch = single_voxel_case(), (8, 8, 8)
    fraction = load_config(method, "paper").data.foreground_fraction
    uniform = hit_fraction(PatchSampler([case], patch, fraction, False), 1000)
    foreground = hit_fraction(PatchSampler([case], patch, 1.0, False), 200)
    assert foreground == 1.0
    assert 0.0 < uniform < 0.25, f"{method}: {uniform:.3f} of the crops hold the one voxel"


@pytest.mark.parametrize("method", [m for m in yaml_files() if "cpu" in yaml.safe_load(
    preset_text(m))])
def test_every_cpu_preset_builds_its_network_for_its_patch(method):
    """A `cpu` preset's network builds for the four BraTS modalities (a generator: T1) and
    accepts its patch."""
    overrides = []
    if method == "clfc":  # the generator is a run folder in use: its architecture stands in
        overrides = ['model.generator={"method": "introvae", "model": {"channels": [4, 8], '
                     '"latent_channels": 4}}']
    config = load_config(method, "cpu", overrides)
    generator = get_entry(method).cls.kind == "generator"
    modalities, classes = (("t1",), 1) if generator else (("t1", "t1c", "t2", "flair"), 4)
    built = build_method(method, modalities, classes, config.model, config.loss_weights)
    built.check_patch(config.data.patch_size)
    assert config.budget_minutes is not None and config.data.val_fraction == 0


def test_cases_keep_their_whole_field_of_view_without_the_brain_crop(phantom, tmp_path):
    config = load_config("unet", "tiny", ["data.val_fraction=0"])
    cropped = prepare_data(config, [phantom], tmp_path / "cache").train[0]
    config = load_config("unet", "tiny", ["data.val_fraction=0", "data.crop_to_brain=false"])
    data = prepare_data(config, [phantom], tmp_path / "cache")
    assert data.preprocess.crop_to_brain is False
    assert data.train[0].shape == (24, 24, 24)  # the phantom's grid, background included
    assert np.prod(cropped.shape) < 24**3  # the crop keeps the head's bounding box only


def _renamed_copy(source, destination, name):
    """A phantom case under a name the phantom never gives (as a real dataset's case)."""
    import shutil

    case = next(p for p in sorted(source.iterdir()) if p.is_dir())
    target = destination / name
    target.mkdir(parents=True)
    for file in case.iterdir():
        shutil.copy(file, target / file.name.replace(case.name, name))
    return destination


def test_train_without_preset_warns_on_scans_that_are_not_the_phantom(make_phantom, tmp_path):
    from tests.runners import cli

    real = _renamed_copy(make_phantom(2, 16, 3), tmp_path / "scans", "BraTS-GLI-00001-000")
    # an unknown method stops the run right after the preset is chosen: nothing trains
    result = cli("train", "--method", "nosuch", "--data", str(real), "--out",
                 str(tmp_path / "run"))
    assert result.returncode == 1
    assert "no --preset: `fast` is sized for the synthetic phantom" in result.stderr
    assert "--preset cpu" in result.stderr and "--preset paper" in result.stderr
    phantom = cli("train", "--method", "nosuch", "--data", str(make_phantom(2, 16, 3)),
                  "--out", str(tmp_path / "run2"))
    assert phantom.returncode == 1 and "no --preset" not in phantom.stderr
    chosen = cli("train", "--method", "nosuch", "--data", str(real), "--out",
                 str(tmp_path / "run3"), "--preset", "fast")
    assert chosen.returncode == 1 and "no --preset" not in chosen.stderr


def test_a_parotid_phantom_counts_as_the_phantom(tmp_path):
    from contraseg.data.parotid_phantom import write_parotid_phantom
    from contraseg.engine.runs import _is_phantom

    write_parotid_phantom(tmp_path / "parotid", cases=1, size=32, seed=0)
    assert _is_phantom(tmp_path / "parotid")
