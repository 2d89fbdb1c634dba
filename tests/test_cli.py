"""The command line as a user runs it: exit codes, what reaches stdout and stderr. Most verbs run
in the test process (tests/runners.py); the entry point and the exit code a shell sees are checked
on real processes."""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tests.runners import CliResult, cli, cli_process

SHAPE = (12, 10, 8)


def one_line_error(result: CliResult, *needles: str) -> str:
    """Assert exit 1, no traceback, and a single error line that contains every needle."""
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def save(path: Path, data: np.ndarray, affine=None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, np.eye(4) if affine is None else affine), path)
    return path


def brats2023_case(root: Path, case: str = "BraTS-GLI-00000-000", skip: str = "") -> Path:
    rng = np.random.default_rng(0)
    folder = root / case
    for suffix in ("t1n", "t1c", "t2w", "t2f"):
        if suffix != skip:
            save(folder / f"{case}-{suffix}.nii.gz", rng.random(SHAPE, dtype=np.float32) + 1)
    seg = np.zeros(SHAPE, np.uint8)
    seg[4:8, 4:7, 3:6] = 2
    seg[5:7, 5:6, 4:5] = 3
    save(folder / f"{case}-seg.nii.gz", seg)
    return folder


@pytest.mark.parametrize(
    "verb",
    [["data", "phantom"], ["data", "check"], ["score"], ["demo"], ["bench"], ["train"],
     ["predict"], ["evaluate"], ["compare"], ["methods"], ["export"], ["pretrain"], ["normal"]],
)
def test_every_verb_has_help_with_an_example(verb):
    result = cli(*verb, "--help")
    assert result.returncode == 0
    assert "Example" in result.stdout


def test_version():
    """The entry point as a shell starts it: `python -m contraseg`."""
    result = cli_process("--version")
    assert result.returncode == 0 and result.stdout.startswith("contraseg ")


@pytest.mark.realdata
def test_score_json_reproduces_published_values(shared_data):
    root = shared_data / "metrics/brats-met-official"
    with open(root / "published_global_metrics.csv") as f:
        published = list(csv.DictReader(f))
    for case in ("BraTS-MET-00132-000", "BraTS-MET-00630-001"):
        result = cli("score", "--pred", str(root / "pred" / f"{case}.nii.gz"),
                     "--ref", str(root / "ref" / f"{case}-seg.nii.gz"),
                     "--labels", "brats2023", "--json")
        assert result.returncode == 0, result.stderr
        scores = json.loads(result.stdout)
        assert set(scores) == {"conventions", "regions"}
        assert set(scores["regions"]) == {"WT", "TC", "ET"}
        assert {"dice", "iou", "sensitivity", "specificity", "precision", "vs", "hd", "hd95",
                "assd"} <= set(scores["regions"]["WT"])
        for row in (r for r in published if r["ref_file"].startswith(case)):
            region = scores["regions"][row["region"].upper()]
            assert region["dice"] == pytest.approx(float(row["global_bin_dsc"]), abs=1e-6)
            assert region["hd95"] == pytest.approx(
                float(row["global_bin_hd95_voxel_units"]), abs=1e-6)


def test_score_nan_policy_gives_strict_json(tmp_path):
    empty = save(tmp_path / "empty.nii.gz", np.zeros(SHAPE, np.uint8))
    result = cli("score", "--pred", str(empty), "--ref", str(empty), "--empty", "nan", "--json")
    assert result.returncode == 0, result.stderr
    scores = json.loads(result.stdout)  # would raise on a bare NaN
    assert scores["regions"]["ET"]["dice"] is None
    assert scores["regions"]["ET"]["specificity"] == 1.0


def test_score_text_table(tmp_path):
    seg = np.zeros(SHAPE, np.uint8)
    seg[2:6, 2:6, 2:6] = 1
    ref = save(tmp_path / "ref.nii.gz", seg)
    result = cli("score", "--pred", str(ref), "--ref", str(ref))
    assert result.returncode == 0
    assert "dice" in result.stdout and "1.0000" in result.stdout


# --- bad input: one line naming the file, exit 1, no traceback --------------------------------

def test_score_truncated_file(tmp_path):
    good = save(tmp_path / "good.nii.gz", np.zeros(SHAPE, np.uint8))
    cut = tmp_path / "cut.nii.gz"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    one_line_error(cli("score", "--pred", str(cut), "--ref", str(good)), str(cut), "corrupt")


def test_score_not_a_nifti(tmp_path):
    good = save(tmp_path / "good.nii.gz", np.zeros(SHAPE, np.uint8))
    fake = tmp_path / "fake.nii.gz"
    fake.write_bytes(gzip.compress(b"this is a text file, not an image"))
    one_line_error(cli("score", "--pred", str(fake), "--ref", str(good)), str(fake))


def test_score_shape_mismatch(tmp_path):
    a = save(tmp_path / "a.nii.gz", np.zeros(SHAPE, np.uint8))
    b = save(tmp_path / "b.nii.gz", np.zeros((12, 10, 9), np.uint8))
    one_line_error(cli("score", "--pred", str(a), "--ref", str(b)), str(a), "shape")


def test_score_unknown_label_values(tmp_path):
    seg = np.zeros(SHAPE, np.uint8)
    seg[0, 0, 0] = 4  # 4 is not a BraTS 2023 value
    bad = save(tmp_path / "bad.nii.gz", seg)
    good = save(tmp_path / "good.nii.gz", np.zeros(SHAPE, np.uint8))
    one_line_error(cli("score", "--pred", str(bad), "--ref", str(good), "--labels", "brats2023"),
                   str(bad), "[4]")


def test_score_missing_file(tmp_path):
    good = save(tmp_path / "good.nii.gz", np.zeros(SHAPE, np.uint8))
    one_line_error(cli("score", "--pred", str(tmp_path / "nope.nii.gz"), "--ref", str(good)),
                   "nope.nii.gz")


def test_score_bad_option_value(tmp_path):
    good = save(tmp_path / "good.nii.gz", np.zeros(SHAPE, np.uint8))
    one_line_error(cli("score", "--pred", str(good), "--ref", str(good), "--hd95", "max"),
                   "hd95")


@pytest.mark.parametrize(("args", "needles"), [
    (("predict", "--run", "r", "--out", "o.nii.gz", "--overlap", "1.5"),
     ("contraseg predict", "--overlap", "0.99")),
    (("predcit",), ("No such command 'predcit'", "predict")),
    (("train", "--nosuch", "1"), ("contraseg train", "--nosuch")),
    (("predict",), ("Missing option '--run'",)),
    (("evaluate", "--run", "r", "--data", "d", "--out", "o", "--tta", "x"), ("Got unexpected",)),
])
def test_usage_errors_are_one_line_and_exit_1(args, needles):
    """typer's own errors (unknown verb or option, a value out of range, a missing option)
    read like every other mistake: one line, exit 1, no box."""
    line = one_line_error(cli(*args), *needles)
    assert line.startswith("error: ") and "╭" not in line


def test_a_shell_sees_exit_1_and_one_line_from_a_real_process(tmp_path):
    """Usage errors and bad input, in a real process: the exit code and the stderr that a
    shell or a pipeline sees (the other tests run the verbs in the test process)."""
    one_line_error(cli_process("train", "--nosuch", "1"), "contraseg train", "--nosuch")
    one_line_error(cli_process("score", "--pred", str(tmp_path / "nope.nii.gz"), "--ref",
                               str(tmp_path / "ref.nii.gz")), "nope.nii.gz")


def test_misleading_mistakes_say_what_is_wrong(tmp_path):
    """A YAML file as --run, a misspelt method, an image as a reference label map."""
    config = tmp_path / "config.yaml"
    config.write_text("method: unet\n")
    one_line_error(cli("predict", "--run", str(config), "--out", str(tmp_path / "s.nii.gz"),
                       "--t1c", str(config)), "config.yaml: not a checkpoint")
    line = one_line_error(cli("train", "--method", "unte", "--data", str(tmp_path),
                              "--out", str(tmp_path / "r")), "unknown method 'unte'", "rfnet")
    assert line.endswith("did you mean 'unet'?") and "configs/" not in line
    rng = np.random.default_rng(0)
    image = save(tmp_path / "t1c.nii.gz", rng.integers(0, 1000, SHAPE).astype(np.int16))
    label = save(tmp_path / "seg.nii.gz", np.zeros(SHAPE, np.uint8))
    line = one_line_error(cli("score", "--pred", str(label), "--ref", str(image)),
                          "t1c.nii.gz", "this looks like an image, not a label map")
    assert len(line) < 200
    one_line_error(cli("predict", "--run", str(tmp_path / "r"), "--out", str(tmp_path / "s.nii.gz"),
                       "--which", "bset", "--t1c", str(image)),
                   "--which 'bset': expected one of auto, best, last")
    zscored = save(tmp_path / "z.nii.gz", rng.normal(size=SHAPE).astype(np.float32))
    one_line_error(cli("score", "--pred", str(label), "--ref", str(zscored)),
                   "z.nii.gz", "non-integral", "this looks like an image")


def test_in_process_a_crash_reads_as_it_would_from_a_process(monkeypatch):
    """tests/runners.cli shows an uncaught exception as the interpreter would (a traceback on
    stderr, exit 1), so the "no traceback" checks of in-process calls can fail."""
    def broken():
        raise RuntimeError("a bug")

    monkeypatch.setattr("contraseg.models.registry.list_methods", broken)
    result = cli("methods")
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "RuntimeError: a bug" in result.stderr


def test_no_arguments_print_the_help_without_an_error():
    result = cli_process()
    assert result.returncode == 0 and "Usage:" in result.stdout and "predict" in result.stdout
    assert not result.stderr.strip()


def problems(result: CliResult) -> list[str]:
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    return [line for line in result.stdout.splitlines() if line.startswith("problem:")]


def test_check_clean_dataset_passes(tmp_path):
    brats2023_case(tmp_path)
    result = cli("data", "check", str(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no problems found" in result.stdout


def test_check_reports_each_problem_with_its_file(tmp_path):
    ok = brats2023_case(tmp_path, "BraTS-GLI-00000-000")
    missing = brats2023_case(tmp_path, "BraTS-GLI-00001-000", skip="t2w")
    nan_case = brats2023_case(tmp_path, "BraTS-GLI-00002-000")
    data = np.ones(SHAPE, np.float32)
    data[1, 1, 1] = np.nan
    save(nan_case / "BraTS-GLI-00002-000-t2f.nii.gz", data)
    shape_case = brats2023_case(tmp_path, "BraTS-GLI-00003-000")
    save(shape_case / "BraTS-GLI-00003-000-t1c.nii.gz", np.ones((12, 10, 7), np.float32))
    label_case = brats2023_case(tmp_path, "BraTS-GLI-00004-000")
    save(label_case / "BraTS-GLI-00004-000-seg.nii.gz", np.full(SHAPE, 7, np.uint8))
    empty_case = brats2023_case(tmp_path, "BraTS-GLI-00005-000")
    save(empty_case / "BraTS-GLI-00005-000-seg.nii.gz", np.zeros(SHAPE, np.uint8))
    four_d = brats2023_case(tmp_path, "BraTS-GLI-00006-000")
    save(four_d / "BraTS-GLI-00006-000-t1n.nii.gz", np.ones((*SHAPE, 2), np.float32))
    cut_case = brats2023_case(tmp_path, "BraTS-GLI-00007-000")
    t1c = cut_case / "BraTS-GLI-00007-000-t1c.nii.gz"
    t1c.write_bytes(t1c.read_bytes()[:100])

    found = problems(cli("data", "check", str(tmp_path)))
    expected = {
        "missing t2": missing / "BraTS-GLI-00001-000-t2w.nii.gz",
        "NaN": nan_case / "BraTS-GLI-00002-000-t2f.nii.gz",
        "shape": shape_case / "BraTS-GLI-00003-000-t1c.nii.gz",
        "[7]": label_case / "BraTS-GLI-00004-000-seg.nii.gz",
        "empty": empty_case / "BraTS-GLI-00005-000-seg.nii.gz",
        "4D": four_d / "BraTS-GLI-00006-000-t1n.nii.gz",
        "corrupt": t1c,
    }
    for needle, path in expected.items():
        assert any(needle in line and str(path) in line for line in found), (needle, found)
    assert not any(str(ok) in line for line in found)
    assert len(found) == len(expected)


def test_check_json(tmp_path):
    brats2023_case(tmp_path)
    result = cli("data", "check", str(tmp_path), "--json")
    report = json.loads(result.stdout)
    assert report["layout"] == "brats2023"
    assert report["cases"][0]["label_values"] == [0, 2, 3]
    assert report["cases"][0]["images"]["flair"]["shape"] == list(SHAPE)
    assert report["problems"] == []


def test_check_missing_folder():
    one_line_error(cli("data", "check", "/nonexistent/dataset"), "/nonexistent/dataset")


@pytest.mark.realdata
def test_check_clinical_scans_name_the_file_that_differs(shared_data):
    case = shared_data / "real/clinical-raw/TCGA-FG-6692"
    found = problems(cli("data", "check", str(case)))
    assert any(str(case / "flair.nii.gz") in p and "(208, 256, 26)" in p for p in found)
    assert any(str(case / "t2.nii.gz") in p and "(224, 256, 26)" in p for p in found)
    resampled = cli("data", "check", str(case), "--resample-to", "t1")
    assert resampled.returncode == 0, resampled.stdout


def test_phantom_refuses_to_overwrite_and_writes_nothing_partial(tmp_path):
    out = tmp_path / "ph"
    first = cli("data", "phantom", "--out", str(out), "--cases", "1", "--size", "32")
    assert first.returncode == 0, first.stderr
    before = sorted(p.name for p in (out / "Phantom-00000").iterdir())
    assert len(before) == 6
    again = cli("data", "phantom", "--out", str(out), "--cases", "1", "--size", "32")
    one_line_error(again, "Phantom-00000")
    assert sorted(p.name for p in out.iterdir()) == ["Phantom-00000"]  # no temp leftovers


def test_demo_end_to_end(tmp_path):
    """The demo's loop at toy size (the full-size figures are in the README and notes)."""
    out = tmp_path / "demo"
    result = cli("demo", "--out", str(out), "--cases", "3", "--test-cases", "1", "--size", "32",
                 "--set", "epochs=1", "--set", "iters_per_epoch=2",
                 "--set", "data.patch_size=[16,16,16]")
    assert result.returncode == 0, result.stdout + result.stderr
    assert (out / "report" / "report.html").is_file()
    with open(out / "report" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert len({r["subset"] for r in rows}) == 15
    assert (out / "run" / "checkpoints" / "best.pt").is_file()
    assert "report:" in result.stdout


def test_output_folder_that_is_a_file(tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("not a folder")
    one_line_error(cli("data", "phantom", "--out", str(blocker), "--cases", "1", "--size", "32"),
                   str(blocker))
    assert blocker.read_text() == "not a folder"  # inputs and bystanders are never modified


def test_compare_seeds_with_vs(tmp_path):
    """`contraseg compare A1 A2 A3 --vs B1 B2` (also `--vs B1 --vs B2`): per-seed means, mean
    and SD over seeds, and the average rows, in the JSON; the two-report form still works."""
    from scipy import stats

    from contraseg.evaluation.metrics_csv import write_metrics_csv

    base = np.array([0.50, 0.60, 0.70, 0.80, 0.90, 0.70])
    diff = np.array([0.07, -0.02, 0.03, -0.05, 0.04, -0.01])

    def report(name, values):
        rows = [{"case": f"c{i}", "subset": subset, "region": "WT", "dice": float(v + shift)}
                for i, v in enumerate(values) for subset, shift in (("t1", 0.0), ("t2", 0.1))]
        write_metrics_csv(rows, tmp_path / name / "metrics.csv")
        return str(tmp_path / name)

    a = [report(f"a{k}", base + o) for k, o in enumerate((0.0, 0.02, 0.04))]
    b = [report(f"b{k}", base + diff + o) for k, o in enumerate((0.0, 0.04))]
    greedy = cli("compare", *a, "--vs", *b, "--json")
    assert greedy.returncode == 0, greedy.stderr
    data = json.loads(greedy.stdout)
    repeated = cli("compare", *a, "--vs", b[0], "--json", "--vs", b[1])
    assert json.loads(repeated.stdout) == data
    assert (data["seeds_a"], data["seeds_b"]) == (3, 2)
    assert [r["subset"] for r in data["results"]] == ["t1", "t2"]
    average = data["average"][0]
    assert (average["subset"], average["region"], average["n"]) == ("average", "WT", 6)
    assert average["seed_means_a"] == pytest.approx([0.75, 0.77, 0.79])
    assert average["mean_a"] == pytest.approx(0.77) and average["sd_a"] == pytest.approx(0.02)
    assert average["mean_b"] == pytest.approx(0.78)
    expected = stats.wilcoxon(base + 0.02, base + diff + 0.02)  # seed-averaged case scores
    assert average["p_value"] == pytest.approx(float(expected.pvalue))
    table = cli("compare", *a, "--vs", *b, columns=250)
    assert table.returncode == 0 and "A seeds" in table.stdout and "average" in table.stdout
    old = cli("compare", a[0], b[0], "--json")
    assert old.returncode == 0 and json.loads(old.stdout)["seeds_b"] == 1
    bad = cli("compare", *a)
    assert bad.returncode == 1 and "--vs" in bad.stderr and len(bad.stderr.splitlines()) == 1
    short = report("short", base[:5])
    bad = cli("compare", *a, "--vs", b[0], short)
    assert bad.returncode == 1 and len(bad.stderr.splitlines()) == 1
    assert bad.stderr.startswith(f"error: {short}") and "lacks case(s) c5" in bad.stderr
