"""Plots render to real, non-trivial PNGs; bad paths and layers, and a missing matplotlib, give clear errors."""

import sys

import numpy as np
import pytest
from helpers import batches, convert, tiny_resnet

import fxsnn

matplotlib = pytest.importorskip("matplotlib")
from matplotlib.image import imread  # noqa: E402


@pytest.fixture(scope="module")
def report():
    model, data = tiny_resnet(), batches()
    return fxsnn.analyze(model, convert(model, data, T=4), data, progress=False)


def _colour_fraction(img, rgb, tol=0.12):
    return float((np.abs(img[..., :3] - np.array(rgb)).max(axis=-1) < tol).mean())


def test_distributions_png_has_blue_and_red_histograms(report, tmp_path):
    names = [r.site for r in report.sites]
    one = fxsnn.report.plot_distributions(report, names[:1], tmp_path / "one.png")
    both = fxsnn.report.plot_distributions(report, None, tmp_path / "both.png")
    assert one == str(tmp_path / "one.png")
    a, b = imread(one), imread(both)
    assert b.shape[1] > a.shape[1]  # one panel per layer
    for img in (a, b):
        assert img.std() > 0.05
        # tab:blue = (0.12, 0.47, 0.71), tab:red = (0.84, 0.15, 0.16) at alpha 0.55 over white
        assert _colour_fraction(img, [0.6, 0.75, 0.85]) > 0.002
        assert _colour_fraction(img, [0.92, 0.53, 0.53]) > 0.0005
    assert (tmp_path / "both.png").stat().st_size > 20_000


def test_layers_bar_chart(report, tmp_path):
    path = fxsnn.report.plot_layers(report, tmp_path / "layers.png")
    img = imread(path)
    assert img.std() > 0.05 and img.shape[0] > 500


def test_bad_plot_arguments(report, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist; create it first"):
        fxsnn.report.plot_distributions(report, None, tmp_path / "no" / "such" / "dir.png")
    with pytest.raises(FileNotFoundError, match="mkdir -p"):
        fxsnn.report.plot_layers(report, tmp_path / "nodir" / "layers.png")
    with pytest.raises(ValueError, match="no activation site named 'layer42'"):
        fxsnn.report.plot_distributions(report, ["layer42"], tmp_path / "x.png")
    with pytest.raises(ValueError, match="ending in .png"):
        fxsnn.report.plot_distributions(report, None, tmp_path / "x.pdf")
    with pytest.raises(ValueError, match="bins"):
        fxsnn.report.plot_distributions(report, None, tmp_path / "x.png", bins=1)
    with pytest.raises(TypeError, match="Report returned by fxsnn.analyze"):
        fxsnn.report.plot_layers({"not": "a report"}, tmp_path / "x.png")
    assert not list(tmp_path.glob("x.*"))


def test_missing_matplotlib_names_the_extra(report, tmp_path, monkeypatch):
    for name in list(sys.modules):
        if name == "matplotlib" or name.startswith("matplotlib."):
            monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=r"pip install 'fxsnn\[plot\]'"):
        fxsnn.report.plot_distributions(report, None, tmp_path / "x.png")
