"""fxsnn demo: it explains fspc and full, and never shows full below fspc without a note saying why."""

import re

import pytest

from fxsnn.report.stages import StageReport, StageReports

demo = pytest.importorskip("fxsnn.cli.demo")


def _stages(start=0.0022, end=0.0004):
    losses = (start,) * 10 + (end,) * 10
    stage2 = StageReport("Stage 2", steps=2, losses=(0.5, 0.25), holdout=((0, 1.0), (2, 2.0)), best_step=0)
    return StageReports([StageReport("front end"), StageReport("Stage 1", losses=losses), stage2])


def test_a_note_for_every_T_where_full_is_below_fspc():
    results = {("fspc", 2): 0.95, ("full", 2): 0.97, ("fspc", 4): 446 / 449, ("full", 4): 444 / 449}
    stages = {2: _stages(), 4: _stages()}
    notes = demo.shortfall_notes(results, stages, ann=446 / 449, n_test=449, n_calib=1348)
    assert len(notes) == 1 and notes[0].startswith("note: at T=4 full is 2 of 449 test digits below fspc")
    assert "fspc already matches the ANN (99.33 %) there" in notes[0]
    assert "tiny calibration set, the 1,348 digits the ANN was trained on" in notes[0]
    assert (
        "training loss Stage 1 0.0022 → 0.0004, Stage 2 0.5000 → 0.2500 (discarded: early stopping kept step 0)"
        in (notes[0])
    )
    below_ann = demo.shortfall_notes(results, stages, ann=0.999, n_test=449, n_calib=1348)
    assert "already matches" not in below_ann[0]  # said only when it is so
    assert demo.shortfall_notes({("fspc", 4): 0.9, ("full", 4): 0.9}, stages, ann=1.0, n_test=10, n_calib=5) == []
    assert demo.shortfall_notes({("full", 4): 0.1}, stages, ann=1.0, n_test=10, n_calib=5) == []  # no fspc: nothing


def test_the_demo_explains_its_methods_and_notes_every_shortfall():
    lines = []
    results = demo.run(time_steps=(1, 4), epochs=2, out=lines.append)
    text = "\n".join(lines)
    assert "fspc: plain parallel conversion (the paper's FS-PC): θ = the running max" in text
    assert "QCFS with L = T, no training" in text and "full: fxsnn's calibration: the front end" in text
    assert "+ Stage 1" in text and "+ Stage 2" in text
    for T in (1, 4):
        below = results[("full", T)] < results[("fspc", T)]
        assert bool(re.search(rf"^note: at T={T} full is \d+ of \d+ test digits below fspc", text, re.M)) == below
    assert "what each stage did (full, T=4):" in text and "BN statistics: 22 batches" in text
