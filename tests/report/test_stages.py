"""What each stage did: the StageReport of Stage 1 / Stage 2 called directly, of fxsnn.convert, its progress bars,
and its round trip through a saved file (inspect prints it, files without it still load)."""

import dataclasses
import json
import math
import zipfile

import pytest
import torch
from helpers import tiny_da, tiny_data, tiny_model
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors
from torch import nn

import fxsnn
from fxsnn.config import ConvertConfig, auto_percentile
from fxsnn.io.archive import write_archive
from fxsnn.report.stages import StageReport, StageReports, train_window

FAST = ConvertConfig().replace(**{"stage1.epochs": 1, "stage2.epochs": 1, "calibration_batches": 4})


def lowered(T=2):
    return fxsnn.passes.lower_to_paraif(tiny_da(T=T), T=T)


# -- Stage 1 / Stage 2 called directly --------------------------------------------------------------------------


def test_recalibrate_bn_records_a_frozen_report_with_counted_steps():
    data = tiny_data()  # 6 batches
    out = fxsnn.recalibrate_bn(tiny_da(), data, epochs=2, holdout=2, progress=False)
    r = out.meta["fxsnn.stage1"]
    assert isinstance(r, StageReport) and r.stage == "Stage 1" and r.ran
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.steps = 0
    assert r.batches == 6  # the BN re-estimation pass saw every batch
    assert r.steps == r.planned_steps == 2 * 4 and r.epochs == r.planned_epochs == 2  # 2 of 6 batches held out
    assert len(r.losses) == r.steps and all(math.isfinite(x) for x in r.losses)
    k = train_window(r.steps)
    assert r.train_loss == pytest.approx((sum(r.losses[:k]) / k, sum(r.losses[-k:]) / k))
    assert r.holdout[0][0] == 0 and all(math.isfinite(h) for _, h in r.holdout)
    assert r.best_step is not None and r.holdout_loss == (r.holdout[0][1], dict(r.holdout)[r.best_step])
    assert r.holdout_loss[1] == min(h for _, h in r.holdout) and r.seconds > 0 and not r.stopped_early
    text = str(r)
    assert "Stage 1" in text and "BN statistics: 6 batches" in text and "2 of 2" in text and "8 of 8" in text


def test_recalibrate_bn_without_holdout_has_no_early_stopping_cells():
    out = fxsnn.recalibrate_bn(tiny_da(), tiny_data(), steps=15, train_theta=False, progress=False)
    r = out.meta["fxsnn.stage1"]
    assert r.steps == 15 and r.epochs == r.planned_epochs == 3  # 6 batches a pass: 6 + 6 + 3
    assert r.best_step is None and r.kept_start is None and r.holdout_loss is None and r.early_stop is None
    assert "held-out" not in str(r) and "early stopping" not in str(r)  # columns empty in every row are left out


def test_tune_delta_b_flags_early_stopping_that_kept_step_0():
    # a huge first step (Δb = ±8 θ_pre) wrecks the held-out loss: patience 1 stops after one evaluation
    hold = tiny_data(n=32, seed=7)
    out = fxsnn.tune_delta_b(
        lowered(), tiny_data(), lr=8.0, lr_min=8.0, warmup=0, clip_grad=None, holdout=hold, patience=1,
        eval_every=1, epochs=3, progress=False,
    )  # fmt: skip
    r = out.meta["fxsnn.stage2"]
    assert r.stage == "Stage 2" and r.mode == "rate" and r.mode_reason
    assert r.stopped_early and r.steps == 1 and r.planned_steps == 18 and r.epochs == 1 and r.planned_epochs == 3
    assert r.holdout[1][1] >= r.holdout[0][1]
    assert r.best_step == 0 and r.kept_start
    assert r.early_stop == "stopped at step 1, kept step 0 (training discarded)"
    assert all(float(n.delta_b.detach().abs().max()) == 0 for n in fxsnn.modes.neurons(out).values())  # Δb = 0 kept
    assert fxsnn.evaluate(out, hold, progress=False).loss == pytest.approx(r.holdout_loss[1], rel=1e-6)
    assert r.holdout_loss[0] == r.holdout_loss[1]
    assert "kept step 0 (training discarded)" in str(r) and "trained in rate mode" in str(r)


def test_tune_delta_b_restoring_a_later_step_says_so():
    hold = tiny_data(n=32, seed=7)
    out = fxsnn.tune_delta_b(
        lowered(), tiny_data(), lr=0.05, holdout=hold, patience=None, eval_every=1, epochs=2, progress=False
    )
    r = out.meta["fxsnn.stage2"]
    assert not r.stopped_early and r.steps == r.planned_steps == 12 and len(r.holdout) == 13
    best = min(range(len(r.holdout)), key=lambda i: r.holdout[i][1])
    assert r.best_step == r.holdout[best][0]
    want = "kept step 0 (training discarded)" if r.best_step == 0 else None
    want = want or ("kept the last step (12)" if r.best_step == 12 else f"restored step {r.best_step}")
    assert r.early_stop == want and r.kept_start == (r.best_step == 0)
    assert fxsnn.evaluate(out, hold, progress=False).loss == pytest.approx(r.holdout_loss[1], rel=1e-5)


# -- fxsnn.convert ----------------------------------------------------------------------------------------------


def test_convert_reports_every_stage_in_order():
    data = tiny_data()
    snn = fxsnn.convert(tiny_model(), data, T=2, method="full", config=FAST, progress=False)
    stages = snn.meta["fxsnn.convert"]["stages"]
    assert isinstance(stages, StageReports) and [r.stage for r in stages] == ["front end", "Stage 1", "Stage 2"]
    front = stages["front end"]
    assert front.ran and front.batches == front.da_batches == 4 and front.theta_percentile == auto_percentile(2)
    assert stages["Stage 1"] == snn.meta["fxsnn.stage1"] and stages["Stage 1"].batches == 6
    assert stages["Stage 2"] == snn.meta["fxsnn.stage2"] and stages[2] is stages["Stage 2"]
    s2 = stages["Stage 2"]
    assert s2.planned_steps == 5 and s2.holdout[0][0] == 0  # 1 of 6 batches held out (10 %)
    text = str(stages)
    theta = f"θ ({auto_percentile(2):g}th percentile): 4 batches; DA: 4 batches"
    for cell in ("front end", theta, "BN statistics: 6 batches", "seconds"):
        assert cell in text, text
    with pytest.raises(KeyError, match="no stage 'Stage 3'"):
        stages["Stage 3"]


def test_convert_reports_skipped_stages_with_their_reason():
    data = tiny_data()
    fspc = fxsnn.convert(tiny_model(), data, T=2, method="fspc", config=FAST, progress=False)
    st = fspc.meta["fxsnn.convert"]["stages"]
    assert st["front end"].theta_percentile is None and st["front end"].da_batches is None
    assert [(r.ran, r.reason) for r in st[1:]] == [
        (False, "method 'fspc' has no Stage 1"),
        (False, "method 'fspc' has no Stage 2"),
    ]
    assert "running max" in str(st) and "no DA" in str(st) and "skipped" in str(st)
    no_bn = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 3)).eval()
    with pytest.warns(UserWarning, match="Stage 1"):
        snn = fxsnn.convert(no_bn, data, T=2, method="full", config=FAST, progress=False)
    st = snn.meta["fxsnn.convert"]["stages"]
    assert st["Stage 1"].reason == "the model has no BatchNorm layer" and st["Stage 2"].ran
    assert "fxsnn.stage1" not in snn.meta


def test_convert_drops_a_stage_report_carried_over_from_its_input():
    data = tiny_data()
    tuned = fxsnn.tune_delta_b(lowered(), data, steps=1, progress=False)
    gm = fxsnn.trace(tiny_model())
    gm.meta["fxsnn.stage2"] = tuned.meta["fxsnn.stage2"]  # a stale report on a GraphModule the user passes
    snn = fxsnn.convert(gm, data, T=2, method="spatial", config=FAST, progress=False)
    assert "fxsnn.stage2" not in snn.meta and not snn.meta["fxsnn.convert"]["stages"]["Stage 2"].ran


def test_progress_bars_say_stage_k_of_n_and_epoch_e_of_E(capsys):
    data = tiny_data()
    cfg = FAST.replace(**{"stage1.epochs": 2})
    fxsnn.convert(tiny_model(), data, T=2, method="full", config=cfg, progress=True)
    err = capsys.readouterr().err
    for desc in (
        "stage 1 of 3, front end: calibrate",
        "stage 1 of 3, front end: calibrate_da",
        "stage 2 of 3, Stage 1: recalibrate_bn",
        "stage 2 of 3, Stage 1: recalibrate_bn epoch 1 of 2",
        "stage 2 of 3, Stage 1: recalibrate_bn epoch 2 of 2",
        "stage 3 of 3, Stage 2: tune_delta_b epoch 1 of 1",
    ):
        assert desc in err, desc
    fxsnn.convert(tiny_model(), data, T=2, method="temporal", config=cfg, progress=True)
    err = capsys.readouterr().err
    assert "stage 2 of 2, Stage 2: tune_delta_b epoch 1 of 1" in err and "of 3" not in err
    fxsnn.recalibrate_bn(tiny_da(), data, epochs=1, progress=True)  # called directly: no stage label
    err = capsys.readouterr().err
    assert "recalibrate_bn epoch 1 of 1" in err and "stage " not in err
    fxsnn.convert(tiny_model(), data, T=2, method="full", config=cfg, progress=False)
    assert capsys.readouterr() == ("", "")  # progress=False stays silent


# -- the saved file ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    snn = fxsnn.convert(tiny_model(), tiny_data(), T=2, method="full", config=FAST, progress=False)
    path = tmp_path_factory.mktemp("stages") / "full.fxsnn"
    fxsnn.save(snn, path)
    return snn, path


def _forge(good, dst, edit):
    with zipfile.ZipFile(good) as zf:
        h, t = json.loads(zf.read("fxsnn.json")), load_tensors(zf.read("tensors.safetensors"))
    edit(h)
    write_archive(str(dst), {k: v for k, v in h.items() if k not in ("sha256", "bytes")}, save_tensors(t))
    return dst


def test_the_saved_file_keeps_the_report_and_load_gives_it_back(saved):
    snn, path = saved
    stages = snn.meta["fxsnn.convert"]["stages"]
    assert fxsnn.io.header_stages(fxsnn.io.read_header(path)) == stages  # JSON floats round-trip exactly
    back = fxsnn.load(path, model=tiny_model())
    assert isinstance(back.meta["fxsnn.convert"]["stages"], StageReports)
    assert back.meta["fxsnn.convert"]["stages"] == stages and str(back.meta["fxsnn.convert"]["stages"]) == str(stages)
    assert back.meta["fxsnn.stage1"] == snn.meta["fxsnn.stage1"] and back.meta["fxsnn.stage2"] == stages["Stage 2"]


def test_files_without_a_report_still_load(saved, tmp_path):
    _, path = saved

    def old(h):  # what a file written before the report existed holds: no "stages", TrainReport dicts
        del h["meta"]["fxsnn.convert"]["stages"]
        for key in ("fxsnn.stage1", "fxsnn.stage2"):
            h["meta"][key] = {"steps": 3, "planned_steps": 3, "losses": [1.0], "holdout": [], "best_step": None}

    forged = _forge(path, tmp_path / "old.fxsnn", old)
    assert fxsnn.io.header_stages(fxsnn.io.read_header(forged)) is None
    back = fxsnn.load(forged, model=tiny_model())
    assert "stages" not in back.meta["fxsnn.convert"] and back.meta["fxsnn.stage1"]["steps"] == 3
    manual = fxsnn.passes.lower_to_paraif(tiny_da(T=2), T=2)  # no fxsnn.convert at all
    fxsnn.save(manual, tmp_path / "manual.fxsnn")
    assert fxsnn.io.header_stages(fxsnn.io.read_header(tmp_path / "manual.fxsnn")) is None


@pytest.mark.parametrize(
    "bad",
    [
        {"steps": "12"},
        {"losses": [1.0, "nan"]},
        {"holdout": [[0, 1.0, 2]]},
        {"stage": 3},
        {"ran": None},
        {"seconds": float("inf")},
        {"extra": 1},
    ],
)
def test_a_forged_report_is_refused_naming_it(saved, tmp_path, bad):
    _, path = saved

    def edit(h):
        h["meta"]["fxsnn.convert"]["stages"][1].update(bad)

    forged = _forge(path, tmp_path / "bad.fxsnn", edit)
    with pytest.raises(fxsnn.io.SaveFileError, match="stage report"):
        fxsnn.io.header_stages(fxsnn.io.read_header(forged))
    with pytest.raises(fxsnn.io.SaveFileError, match="stage report"):
        fxsnn.load(forged, model=tiny_model())


def test_stage_rows_from_json_check_every_field():
    row = StageReport("Stage 2", steps=3, planned_steps=4, losses=(1.0, 0.5, 0.25), holdout=((0, 1.0), (3, 0.5)))
    data = fxsnn.io.record.jsonable(StageReports([row]), "stages", [])
    assert json.loads(json.dumps(data)) == data and StageReports.from_json(data) == StageReports([row])
    assert torch.tensor(row.train_loss).tolist() == [1.0, 0.25]  # windows of one step when there are < 20
