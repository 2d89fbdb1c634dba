"""The published splits shipped as data: their counts, ID formats and sources, and how a split
is named, loaded and matched to a dataset's cases."""

from __future__ import annotations

import json
import re

import pytest

from contraseg.data.splits import PARTS, keyed_split, load_split, read_split_file, split_names
from contraseg.errors import ConfigError, InputError


def shipped(name: str) -> dict:
    from contraseg.data.splits import split_files

    return read_split_file(split_files()[name])


PUBLISHED = ["rfnet-brats2018", "rfnet-brats2020", "imfuse-brats2023", "brats2023-5fold"]
NO_LIST = ["brats2021-5fold", "clfc-brats2019", "dclmanet", "mmformer-brats2018",
           "swin-moco-parotid"]


def test_the_shipped_splits_are_listed():
    assert split_names() == sorted(PUBLISHED + NO_LIST)


@pytest.mark.parametrize("name", PUBLISHED)
def test_a_published_split_holds_its_counts_and_id_format(name):
    data = shipped(name)
    assert data["published"] is True and data["folds"]
    assert data["source"].get("note") or data["source"]["commit"]
    pattern = re.compile(data["id_pattern"])
    for fold in data["folds"]:
        parts = [fold[part] for part in PARTS]
        if data["counts"]:
            assert [len(p) for p in parts] == data["counts"], fold["name"]
        every = [case for part in parts for case in part]
        assert len(every) == len(set(every)), f"{name} {fold['name']}: a case twice"
        assert all(pattern.match(case) for case in every), name


def test_rfnet_brats2018_draws_three_splits_of_all_285_cases():
    folds = shipped("rfnet-brats2018")["folds"]
    assert [f["name"] for f in folds] == ["1", "2", "3"]
    unions = [{c for part in PARTS for c in f[part]} for f in folds]
    assert len(unions[0]) == 285 and unions[0] == unions[1] == unions[2]
    assert {"Brats18_CBICA_AAB_1", "Brats18_2013_23_1", "Brats18_TCIA10_637_1"} <= unions[0]
    assert set(folds[0]["test"]) != set(folds[1]["test"])  # draws, not one split thrice


def test_rfnet_brats2020_covers_the_369_cases_under_their_official_names():
    fold = shipped("rfnet-brats2020")["folds"][0]
    every = {c for part in PARTS for c in fold[part]}
    assert every == {f"BraTS20_Training_{n:03d}" for n in range(1, 370)}


@pytest.mark.parametrize("name", ["imfuse-brats2023", "brats2023-5fold"])
def test_the_brats2023_splits_keep_a_patients_scans_together(name):
    folds = shipped(name)["folds"]
    for fold in folds:
        patients = {part: {c.rsplit("-", 1)[0] for c in fold[part]} for part in PARTS}
        assert not patients["train"] & patients["test"]
        assert not patients["val"] & (patients["train"] | patients["test"])
    if name == "brats2023-5fold":
        tests = [c for fold in folds for c in fold["test"]]
        assert len(tests) == len(set(tests)) == 1251  # the five test parts cover every scan


@pytest.mark.parametrize("name", NO_LIST)
def test_a_paper_without_a_list_says_so_and_is_refused_with_its_note(name):
    data = shipped(name)
    assert data["published"] is False and data["folds"] == []
    assert data["source"]["note"]
    with pytest.raises(ConfigError, match=f"{name} publishes no patient list"):
        load_split(name)


def test_a_split_is_named_with_its_fold():
    assert load_split("rfnet-brats2018").name == "rfnet-brats2018:1"
    third = load_split("rfnet-brats2018:3")
    assert third.name == "rfnet-brats2018:3" and len(third.test) == 57
    assert third.source["commit"] and "M2FTrans" in third.source["repository"]
    with pytest.raises(ConfigError, match="has folds 1 to 3"):
        load_split("rfnet-brats2018:4")
    with pytest.raises(ConfigError, match="no such split.*did you mean 'rfnet-brats2018'"):
        load_split("rfnet-brats2019")


def test_a_split_file_of_ones_own(tmp_path):
    path = tmp_path / "mine.json"
    path.write_text(json.dumps({"name": "mine", "folds": [
        {"train": ["a", "b"], "val": [], "test": ["c"]},
        {"train": ["b", "c"], "val": [], "test": ["a"]}]}))
    assert load_split(f"{path}:2").parts() == {"train": ["b", "c"], "val": [], "test": ["a"]}
    path.write_text('{"folds": "a"}')
    with pytest.raises(InputError, match="needs 'folds'"):
        load_split(str(path))


def test_matching_a_split_to_the_cases_found():
    split = load_split("rfnet-brats2020")
    keys = [f"data/BraTS20_Training_{n:03d}" for n in range(1, 370)]
    keyed = keyed_split(split, keys, "data")
    assert len(keyed["train"]) == 219 and keyed["test"][0].startswith("data/BraTS20_Training_")
    with pytest.raises(InputError, match=r"names 3 case\(s\) the data lacks \(366 of its 369 "
                                         r"found\): BraTS20_Training_00[123]"):
        keyed_split(split, keys[3:], "data")


def test_train_on_a_split_file_and_evaluate_its_test_cases(tmp_path, make_phantom):
    """`train --split FILE.json:2` trains on that fold's parts (its test cases held out),
    `evaluate --split` scores only its test cases, and a split naming cases the data lacks is
    refused in one line."""
    import csv

    from tests.runners import cli

    data = make_phantom(cases=4, size=32, seed=3)
    split = tmp_path / "mine.json"
    ids = [f"Phantom-{i:05d}" for i in range(4)]
    split.write_text(json.dumps({"name": "mine", "folds": [
        {"train": ids[:2], "val": [], "test": ids[2:]},
        {"train": ids[1:3], "val": [ids[0]], "test": ids[3:]}]}))
    run = tmp_path / "run"
    done = cli("train", "--method", "unet", "--preset", "tiny", "--data", str(data), "--out",
               str(run), "--split", f"{split}:2", "--set", "epochs=1", "--set", "val_every=0",
               "--set", "log.curves=false", "--set", "log.tensorboard=false")
    assert done.returncode == 0, done.stderr
    info = json.loads((run / "run.json").read_text())
    assert info["config"]["split"] == f"{split}:2"
    assert info["split"] == {"train": ["ph/Phantom-00001", "ph/Phantom-00002"],
                             "val": ["ph/Phantom-00000"], "test": ["ph/Phantom-00003"]}
    scored = cli("evaluate", "--run", str(run), "--data", str(data), "--out",
                 str(tmp_path / "report"), "--subsets", "full", "--overlays", "0",
                 "--split", f"{split}:2")
    assert scored.returncode == 0, scored.stderr
    with open(tmp_path / "report" / "metrics.csv") as handle:
        assert {row["case"] for row in csv.DictReader(handle)} == {"Phantom-00003"}
    refused = cli("train", "--method", "unet", "--preset", "tiny", "--data", str(data),
                  "--out", str(tmp_path / "no"), "--split", "rfnet-brats2020")
    assert refused.returncode == 1 and len(refused.stderr.strip().splitlines()) == 1
    assert "names 369 case(s) the data lacks (0 of its 369 found)" in refused.stderr
    both = cli("train", "--method", "unet", "--preset", "tiny", "--data", str(data),
               "--out", str(tmp_path / "cv"), "--split", "rfnet-brats2020", "--folds", "2")
    assert both.returncode == 1 and "--split and --folds" in both.stderr
