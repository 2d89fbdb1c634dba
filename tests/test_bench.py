"""`contraseg bench` produces complete, well-formed figures (never asserts on speed)."""

from __future__ import annotations

import json
import statistics

import pytest

from contraseg.bench import (
    bench_loader,
    bench_method,
    bench_metrics,
    bench_phantom,
    bench_preprocess,
    run_bench,
)
from contraseg.errors import ConfigError
from tests.conftest import STARTS_PROCESSES


def _is_timing(value: dict, repeats: int) -> bool:
    runs = value["runs_s"]
    return len(runs) == repeats and all(t > 0 for t in runs) and (
        value["median_s"] == statistics.median(runs))


def test_bench_metrics_on_a_small_pair():
    result = bench_metrics(shape=(40, 40, 30), repeats=3)
    assert result["shape"] == [40, 40, 30]
    assert 0.005 * 40 * 40 * 30 < result["foreground_voxels"] < 0.1 * 40 * 40 * 30
    assert _is_timing(result["dice_one_region"], 3)
    assert _is_timing(result["all_metrics_one_region"], 3)


def test_bench_phantom_and_preprocess_small():
    assert _is_timing(bench_phantom(cases=1, size=32, repeats=1)["write"], 1)
    result = bench_preprocess(size=32, repeats=1)
    assert {"load_case", "preprocess", "invert_labels"} <= set(result)


def test_run_bench_refuses_unknown_targets_and_bad_repeats():
    with pytest.raises(ConfigError, match="nope"):
        run_bench(["nope"], 1)
    with pytest.raises(ConfigError, match="repeats"):
        run_bench(["metrics"], 0)


@pytest.fixture
def small_peak(monkeypatch):
    """The peak probes at toy sizes (the figures are checked for consistency, not speed)."""
    from contraseg import bench_utilisation

    monkeypatch.setattr(bench_utilisation, "MATMUL_SIZE", 64)
    monkeypatch.setattr(bench_utilisation, "CONV_SHAPE", (1, 4, 8, 8, 8))


@pytest.mark.parametrize("method", ["unet", "rfnet", "dc-seg", "dcl-manet", "clfc", "swin-moco"])
def test_bench_method_reports_every_figure(method, small_peak):
    result = bench_method(method, preset="tiny", steps=2, case_shape=(20, 20, 20))
    expected_patch = {"clfc": [16, 16, 4], "swin-moco": [16, 16, 2]}.get(method, [16, 16, 16])
    assert result["parameters"] > 0 and result["patch_size"] == expected_patch
    assert _is_timing(result["train_step"], 2)
    assert result["train_voxels_per_s"] > 0
    for key in ("infer_case_all_modalities", "infer_case_15_subsets"):
        assert _is_timing(result[key], 1)
    assert result["peak_rss_mb"] >= result["train_peak_rss_mb"] > 0
    flops = result["window_flops"]
    assert flops["decode_per_subset"] > 0 and flops["subsets"] == 15
    if method in ("rfnet", "dc-seg", "dcl-manet"):  # per-modality encoders run once a window
        assert flops["encode"] > 0 and 1 < flops["least_ratio_to_one_subset"] < 15
    if method == "unet":  # nothing is shared between subsets
        assert flops["encode"] == 0 and flops["least_ratio_to_one_subset"] == 15
    floor = result["infer_15_subsets_vs_floor"]
    one_s, every_s = (result[k]["median_s"]
                      for k in ("infer_case_all_modalities", "infer_case_15_subsets"))
    assert floor["time_ratio"] == pytest.approx(every_s / one_s)
    assert floor["of_floor"] == pytest.approx(
        floor["time_ratio"] / flops["least_ratio_to_one_subset"])
    parts = result["window_seconds"]  # the network's own parts of a window, timed
    assert parts["encode_s"] >= 0 and parts["decode_per_subset_s"] > 0 and parts["windows"] >= 1
    assert 1 < floor["time_floor_ratio"] <= 15
    assert floor["of_time_floor"] == pytest.approx(
        floor["time_ratio"] / floor["time_floor_ratio"])
    use = result["utilisation"]
    assert use["peak"]["matmul"]["flops"] == 2 * 64 ** 3  # counted, not assumed
    assert use["peak"]["conv3d"]["flops"] == 2 * 4 * 4 * 27 * 8 ** 3
    for key in ("train_step", "infer_case_all_modalities", "infer_case_15_subsets"):
        figures = use[key]
        assert figures["flops"] > 0
        assert figures["flops_per_s"] == pytest.approx(figures["flops"] / result[key]["median_s"])
        assert figures["of_conv3d_peak"] == pytest.approx(
            figures["flops_per_s"] / use["peak"]["conv3d"]["flops_per_s"])
    # the 15-subset pass does at least the FLOPs of one subset and at most 15 times them
    one, every = (use[k]["flops"] for k in ("infer_case_all_modalities", "infer_case_15_subsets"))
    assert one < every <= 15 * one


def test_bench_method_without_inference(small_peak):
    result = bench_method("unet", preset="tiny", steps=1, infer=False)
    assert "infer_case_all_modalities" not in result and "infer_case_15_subsets" not in result
    assert _is_timing(result["train_step"], 1) and result["train_peak_rss_mb"] > 0
    assert set(result["utilisation"]) == {"peak", "train_step"}
    assert "utilisation" not in bench_method("unet", preset="tiny", steps=1, infer=False,
                                             utilisation=False)


def test_bench_method_amp_auto_times_what_the_probe_chose(small_peak, tmp_path, monkeypatch):
    monkeypatch.setenv("CONTRASEG_CACHE_DIR", str(tmp_path))
    result = bench_method("unet", preset="tiny", steps=1, infer=False, amp="auto")
    probe = result["amp_probe"]
    assert result["amp"] == probe["amp"] in ("none", "bf16")
    assert result["memory_format"] == ("channels_last_3d" if probe["channels_last"]
                                       else "contiguous_format")


def test_bench_method_applies_overrides_and_refuses_unknown_ones():
    result = bench_method("rfnet", preset="tiny", steps=1, infer=False, utilisation=False,
                          overrides=["model.checkpointing=true"])
    assert result["overrides"] == ["model.checkpointing=true"]
    with pytest.raises(ConfigError, match="nosuch"):
        bench_method("rfnet", preset="tiny", steps=1, infer=False, overrides=["nosuch=1"])


def test_bench_times_clfc_with_a_random_generator():
    result = bench_method("clfc", preset="fast", steps=1, infer=False, patch=32,
                          utilisation=False)
    assert "random introvae (fast" in result["generator"]
    assert _is_timing(result["train_step"], 1)


@STARTS_PROCESSES
def test_bench_loader_reports_each_worker_count():
    result = bench_loader("unet", preset="tiny", cases=3, size=32, workers=(0, 1), batches=3,
                          repeats=2)
    assert result["patch_size"] == [16, 16, 16] and result["batch_size"] == 2
    assert set(result["workers"]) == {"0", "1"}
    for figures in result["workers"].values():
        assert _is_timing(figures["batches"], 2) and figures["first_batch_s"] > 0
        assert figures["patches_per_s"] == pytest.approx(3 * 2 / figures["batches"]["median_s"])
        if figures.get("peak_tree_pss_mb") is not None:  # Linux
            assert 0 < figures["peak_tree_pss_mb"] <= figures["peak_tree_rss_mb"]
    assert result["workers"]["0"]["speedup_vs_0"] == 1.0
    assert "side_by_side" not in result["workers"]["0"]
    ceiling = result["workers"]["1"]["side_by_side"]
    assert _is_timing(ceiling["batches"], 2)
    assert ceiling["patches_per_s"] == pytest.approx(3 * 2 / ceiling["batches"]["median_s"])
    assert result["workers"]["1"]["vs_side_by_side"] == pytest.approx(
        result["workers"]["1"]["patches_per_s"] / ceiling["patches_per_s"])
    # with a worker the tree holds one more process
    one = result["workers"]["1"].get("peak_tree_rss_mb")
    if one is not None:
        assert one > result["workers"]["0"]["peak_tree_rss_mb"]


@STARTS_PROCESSES
def test_bench_loader_reports_the_wait_of_a_step_beside_an_off_cpu_model():
    result = bench_loader("unet", preset="tiny", cases=2, size=32, workers=(0, 1), batches=4,
                          repeats=1, model_step_ms=5)
    assert result["model_step_ms"] == 5
    for figures in result["workers"].values():
        wait = figures["wait_per_step_ms"]
        assert 0 <= wait["median"] <= wait["max"] and 0 <= wait["mean"] <= wait["max"]


def test_bench_loader_refuses_a_generator():
    with pytest.raises(ConfigError, match="segmentation method"):
        bench_loader("introvae", preset="tiny", cases=1, size=16)


@pytest.mark.slow(reason="torch.profiler parses every event of a 15-subset pass: 10-20 s")
def test_profile_step_reports_the_dense_share_of_an_inference_pass(capsys, monkeypatch):
    """scripts/profile_step.py --infer all: the operator table of the 15-subset pass and the
    share of its time in convolutions and matrix products."""
    import re
    import sys

    from tests.conftest import REPO, load_script

    script = load_script(REPO / "scripts" / "profile_step.py")
    monkeypatch.setattr(sys, "argv", ["profile_step.py", "rfnet", "--preset", "tiny", "--patch",
                                      "16", "--threads", "1", "--infer", "all", "--case", "16",
                                      "16", "16"])
    script.main()
    printed = capsys.readouterr().out
    assert "Self CPU" in printed
    share = re.search(r"convolutions and matrix products: ([0-9.]+) s of ([0-9.]+) s self CPU "
                      r"time \(([0-9]+) %\)", printed)
    assert share and 0 < float(share[1]) <= float(share[2]) and 0 < int(share[3]) <= 100


def test_profile_predict_times_each_stage_and_compares_the_labels(tiny_run, make_phantom,
                                                                   tmp_path, capsys, monkeypatch):
    """scripts/profile_predict.py: stage medians and label hashes per case, predict's own path
    writing the same labels as the stages, and --against: ratios and the labels check."""
    import sys

    from tests.conftest import REPO, load_script

    data = make_phantom(cases=3, size=32, seed=5)  # test_evaluate's run: trained once
    run = tiny_run("unet", data, "epochs=1", "val_every=0")
    script = load_script(REPO / "scripts" / "profile_predict.py")
    common = ["profile_predict.py", str(run), str(data), "--cases", "2", "--repeats", "1",
              "--threads", "1"]
    monkeypatch.setattr(sys, "argv", [*common, "--json", str(tmp_path / "a.json")])
    script.main()
    first = json.loads((tmp_path / "a.json").read_text())
    assert first["subsets"] == 1 and len(first["cases"]) == 2 and first["import_seconds"] > 0
    for entry in first["cases"].values():
        assert set(entry["seconds"]) == {"read", "preprocess", "network", "to_input_grid",
                                         "et_rule", "total", "predict"}
        assert all(value > 0 for value in entry["seconds"].values())
        staged, written = entry["labels"]
        assert staged == written  # predict's file holds the labels the stages made
    monkeypatch.setattr(script, "import_seconds", lambda repeats: 1.0)  # timed once is enough
    monkeypatch.setattr(sys, "argv", [*common, "--subsets", "all", "--json",
                                      str(tmp_path / "b.json"), "--against",
                                      str(tmp_path / "a.json")])
    script.main()
    assert len(next(iter(json.loads((tmp_path / "b.json").read_text())["cases"].values())
                    )["labels"]) == 15
    printed = capsys.readouterr().out
    assert "network: " in printed and "labels identical in every case and subset: False" in printed
    monkeypatch.setattr(sys, "argv", [*common, "--against", str(tmp_path / "a.json")])
    script.main()  # the same labels again: the pass is deterministic
    assert "labels identical in every case and subset: True" in capsys.readouterr().out
