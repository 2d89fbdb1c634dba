"""Per-modality methods through the engine on the real scans of ../shared/data (skipped when
the folder is absent): mixed modalities across datasets, prediction on the input's grid."""

from __future__ import annotations

import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from contraseg.data.layouts import discover
from contraseg.engine.predictor import Predictor
from contraseg.engine.runs import start_training
from tests.conftest import QUIET


def assert_segments_a_brats2023_case_on_its_grid(run, real, tmp_path) -> None:
    """The run segments an unlabelled BraTS 2023 case; the map is on the case's grid."""
    case = real / "brats2023-unlabeled" / "BraTS-GLI-00001-000"
    predictor = Predictor.from_run(run)
    out = predictor.predict_case(discover(case.parent).cases[0], tmp_path / "pred.nii.gz")
    image, pred = nib.load(next(case.glob("*-t1c.nii.gz"))), nib.load(out)
    assert pred.shape == image.shape and np.allclose(pred.affine, image.affine)


def train_ixi_introvae(out, shared_data) -> dict:
    """A tiny IntroVAE on the healthy IXI T1 (to prove the path, not to be good)."""
    return start_training(out, method="introvae", preset="tiny", data=[shared_data / "normal"],
                          overrides=["val_every=0", "epochs=1", "data.patch_size=[64,64,1]",
                                     "data.val_fraction=0", *QUIET],
                          resume=False, max_steps=None, max_minutes=None, console=None)


@pytest.mark.realdata
@pytest.mark.slow(reason="trains on six real cases and segments a whole BraTS case with 48^3 "
                         "windows: 15-40 s a method")
@pytest.mark.parametrize("method", ["dc-seg", "dcl-manet", "swin-moco"])
def test_real_scans_mixed_modalities_train_and_predict_on_the_input_grid(tmp_path, shared_data,
                                                                         method, real_cache):
    """BraTS 2015 (FLAIR + T1c, z-scored) with TCGA (4 raw modalities): a run over the union
    of modalities (modalities absent from a case are absent from its batches: the contrastive
    terms and the per-modality modules must cope), then a BraTS 2023 case segmented on its own
    grid."""
    real = shared_data / "real"
    info = start_training(tmp_path / "run", method=method, preset="tiny",
                          data=[real / "tcga-gbm-pseudolabel", real / "brats2015-flair-t1c"],
                          # 48^3 windows: a whole case in ~100 windows, not thousands of 16^3
                          overrides=["val_every=0", "epochs=1", "data.patch_size=[48,48,48]",
                                     f"data.cache_dir={real_cache}", *QUIET],
                          resume=False, max_steps=None,
                          max_minutes=None, console=None)
    assert info["status"] == "finished"
    assert set(info["modalities"]) == {"t1", "t1c", "t2", "flair"}
    record = json.loads((tmp_path / "run" / "log.jsonl").read_text().splitlines()[-1])
    assert all(math.isfinite(v) for v in record["loss"].values())
    assert_segments_a_brats2023_case_on_its_grid(tmp_path / "run", real, tmp_path)


@pytest.mark.realdata
def test_introvae_on_ixi_then_a_pseudo_normal_on_a_tcga_grid(tmp_path, shared_data):
    """The CLFC generator's path on real scans: an IntroVAE on the healthy IXI T1 (tiny, to
    prove the path), then the pseudo-normal T1 of a TCGA case written in that case's grid."""
    from contraseg.engine.normal_run import pseudo_normal

    info = train_ixi_introvae(tmp_path / "vae", shared_data)
    assert info["status"] == "finished" and info["modalities"] == ["t1"]
    case = shared_data / "real" / "tcga-gbm-pseudolabel" / "TCGA-DU-7294"
    t1 = case / "TCGA-DU-7294_t1_bet.nii.gz"
    out = pseudo_normal(tmp_path / "vae", t1, tmp_path / "pseudo.nii.gz", which="last",
                        device="cpu")
    source, written = nib.load(t1), nib.load(out)
    assert written.shape == source.shape and np.allclose(written.affine, source.affine)
    assert np.isfinite(np.asarray(written.dataobj)).all()


@pytest.mark.realdata
@pytest.mark.slow(reason="an IntroVAE, then CLFC on six real cases and a whole BraTS case "
                         "segmented in 2.5D (about 25 s)")
def test_clfc_on_real_scans_with_an_ixi_introvae(tmp_path, shared_data, real_cache):
    """CLFC end to end on real scans: an IntroVAE on IXI, then CLFC on TCGA (T1 present: the
    pseudo-normal comes from T1) with BraTS 2015 (FLAIR + T1c: T1c stands in, as the authors
    do for data without T1), then a BraTS 2023 case segmented on its own grid."""
    train_ixi_introvae(tmp_path / "vae", shared_data)
    real = shared_data / "real"
    info = start_training(tmp_path / "run", method="clfc", preset="tiny",
                          data=[real / "tcga-gbm-pseudolabel", real / "brats2015-flair-t1c"],
                          overrides=["val_every=0", "epochs=1", "data.patch_size=[48,48,8]",
                                     f"normal_run={tmp_path / 'vae'}",
                                     f"data.cache_dir={real_cache}", *QUIET],
                          resume=False, max_steps=None, max_minutes=None, console=None)
    assert info["status"] == "finished"
    cached = [np.load(p) for p in (Path(real_cache) / "case-inputs").glob("*.npy")]
    assert cached and all(np.isfinite(c).all() for c in cached)
    # every training case has a pseudo-normal: from T1 (TCGA) or from T1c (BraTS 2015)
    assert any(c[0].any() for c in cached) and any(c[1].any() and not c[0].any()
                                                   for c in cached)
    assert_segments_a_brats2023_case_on_its_grid(tmp_path / "run", real, tmp_path)


@pytest.mark.realdata
def test_swin_moco_pretrains_on_unlabelled_real_scans_then_fine_tunes(tmp_path, shared_data):
    """MoCo pre-training on the unlabelled BraTS 2023 cases (raw intensities, their own grid),
    then the Swin-Unet fine-tuned from it on TCGA: the pre-trained encoder is loaded."""
    real = shared_data / "real"
    info = start_training(tmp_path / "moco", method="swin-moco-pretrain", preset="tiny",
                          data=[real / "brats2023-unlabeled"],
                          overrides=["epochs=1", "data.patch_size=[64,64,1]"], resume=False,
                          max_steps=None, max_minutes=None, console=None)
    assert info["status"] == "finished" and info["label_convention"] is None
    log = json.loads((tmp_path / "moco" / "log.jsonl").read_text().splitlines()[-1])
    assert math.isfinite(log["loss"]["moco"])
    info = start_training(tmp_path / "ft", method="swin-moco", preset="tiny",
                          data=[real / "tcga-gbm-pseudolabel"],
                          overrides=["epochs=1", "val_every=0", "data.patch_size=[48,48,4]",
                                     f"init={tmp_path / 'moco'}"],
                          resume=False, max_steps=None, max_minutes=None, console=None)
    assert info["status"] == "finished" and info["init"]["skipped"] == []
    assert info["init"]["loaded"] > 10 and info["init"]["decoder_copied"]


@pytest.mark.realdata
@pytest.mark.slow(reason="400 training steps of the cpu preset on real scans: about 5 minutes")
def test_the_unet_cpu_preset_learns_real_brats_scans(tmp_path, shared_data):
    """A guard of the real-data path, not the benchmark: the U-Net `cpu` preset trained briefly
    (400 steps) on 4 BraTS 2018 cases of the benchmark's training split segments a held-back
    test case with all four modalities far better than chance (whole tumour)."""
    from contraseg.data.io import load_case
    from contraseg.data.labels import get_convention
    from contraseg.evaluation.metrics import confusion_counts, overlap_metrics
    from tests.conftest import REPO, load_script

    bench = load_script(REPO / "scripts" / "real_benchmark" / "make_manifests.py")
    split, brats = bench.brats_split(), shared_data / "real" / "brats2018"
    # one 2013/CBICA mix of the benchmark's training split: ABM, ALU, AME, AVG
    bench.write(tmp_path / "train", bench.manifest(brats, split["train"][3:7], bench.BRATS_FILES,
                                                   "brats2020"))
    info = start_training(tmp_path / "run", method="unet", preset="cpu",
                          data=[tmp_path / "train"],
                          overrides=["budget_minutes=null", "epochs=4", "iters_per_epoch=100"],
                          resume=False, max_steps=None, max_minutes=None, console=None)
    assert info["status"] == "finished" and info["step"] == 400
    held_back = split["test"][1]  # Brats18_CBICA_AQN_1, never trained on
    case = discover(brats, labels="brats2020")
    spec = next(c for c in case.cases if c.case_id == held_back)
    predictor = Predictor.from_run(tmp_path / "run")
    out = predictor.predict_case(spec, tmp_path / "pred.nii.gz")
    reference = load_case(spec).label
    pred = np.asarray(nib.load(out).dataobj)
    convention = get_convention("brats2020")
    wt = overlap_metrics(confusion_counts(convention.region_masks(
        convention.to_canonical(pred))["WT"], convention.region_masks(
        convention.to_canonical(reference))["WT"]))["dice"]
    assert wt > 0.6, f"WT Dice {wt:.3f} on {held_back}"
