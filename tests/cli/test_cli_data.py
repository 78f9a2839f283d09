"""CLI data loading (issue 9, items 16-17): uint8 and channels-last files are detected and said, normalisation
presets, a warning for unnormalised inputs, separate limits for calibration and evaluation data, and a warning
when the data covers only a few classes."""

import numpy as np
import pytest
import torch
from helpers import run_cli as run
from helpers import tiny_model

import fxsnn

RGB = "helpers:tiny_model"  # 3 input channels, 3 classes, 8x8 inputs
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("clidata")
    g = np.random.RandomState(0)
    x = g.randint(0, 256, size=(60, 8, 8, 3)).astype(np.uint8)  # CIFAR-style: uint8, channels last
    y = g.randint(0, 3, 60)
    np.savez(d / "nhwc_u8.npz", x=x, y=y)
    order = np.argsort(y, kind="stable")  # sorted by class, like the shared CIFAR-10 files
    np.savez(d / "sorted.npz", x=x[order], y=y[order])
    return d


def _images(path, *, nhwc=True, scale=1 / 255):
    d = np.load(path)
    x = torch.from_numpy(d["x"]).float()
    x = x.permute(0, 3, 1, 2) if nhwc else x
    return (x / 255 if scale == 1 / 255 else x * scale), torch.from_numpy(d["y"]).long()


def _top1(out: str, network: str) -> str:
    return next(line.split()[-3] for line in out.splitlines() if line.startswith(network))


def test_uint8_channels_last_file_converts_and_evaluates_with_no_extra_flags(files, capsys, tmp_path):
    path = files / "nhwc_u8.npz"
    argv = ["convert", "--model", RGB, "--data", path, "--T", "2", "--method", "fspc", "--out", tmp_path / "s.fxsnn"]
    code, out, err = run(argv + ["--eval-data", path], capsys)
    assert code == 0, err
    assert (
        f"note: --data {path}: x has shape [60, 8, 8, 3] and the model takes 3 input channels: read as channels-last "
        "[N, H, W, C] and permuted to [N, C, H, W] (--nchw if it is not)" in err
    )
    assert f"note: --data {path}: x is uint8 (0..255): divided by 255 to [0, 1] (--scale 1 keeps 0..255)" in err
    x, y = _images(path)
    ann = fxsnn.evaluate(tiny_model(), [(x, y)], progress=False)
    snn = fxsnn.load(tmp_path / "s.fxsnn", model=tiny_model())
    assert f"ANN: {ann}" in out and f"SNN: {fxsnn.evaluate(snn, [(x, y)], progress=False)}" in out
    code, out, err = run(["eval", "--snn", tmp_path / "s.fxsnn", "--model", RGB, "--data", path], capsys)
    assert code == 0, err
    assert _top1(out, "ANN") == f"{100 * ann.top1:.2f}"


def test_unnormalised_inputs_warn_naming_the_flags(files, capsys):
    path = files / "nhwc_u8.npz"
    code, _, err = run(["eval", "--model", RGB, "--data", path], capsys)
    assert code == 0, err
    assert (
        f"warning: --data {path}: x lies in [0, 1] (min 0, max 1) and no normalisation was given: most trained "
        "networks expect normalised inputs. Give --normalize imagenet or --normalize cifar10 or --mean/--std; "
        "--normalize none if the model takes these values as they are" in err
    )
    code, _, err = run(["eval", "--model", RGB, "--data", path, "--scale", "1"], capsys)  # kept as 0..255
    assert code == 0 and "x is uint8" not in err
    assert "x lies in [0, 255] (min 0, max 255)" in err and "--scale 0.0039215686 maps 0..255 to [0, 1]" in err
    code, _, err = run(["eval", "--model", RGB, "--data", path, "--normalize", "none"], capsys)
    assert code == 0 and "warning" not in err


def test_normalisation_presets(files, capsys):
    path = files / "nhwc_u8.npz"
    code, out, err = run(["eval", "--model", RGB, "--data", path, "--normalize", "cifar10"], capsys)
    assert code == 0 and "warning" not in err
    x, y = _images(path)
    m, s = torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1), torch.tensor(CIFAR_STD).view(1, 3, 1, 1)
    want = fxsnn.evaluate(tiny_model(), [((x - m) / s, y)], progress=False)
    assert _top1(out, "ANN") == f"{100 * want.top1:.2f}" and f"{want.loss:.4f}" in out
    from fxsnn.io.loaders import NORMALIZE_PRESETS, load_data

    assert NORMALIZE_PRESETS["imagenet"] == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    xb = next(iter(load_data(path, batch_size=60, normalize="imagenet", report=lambda *a: None)))[0]
    im, istd = (torch.tensor(v).view(1, 3, 1, 1) for v in NORMALIZE_PRESETS["imagenet"])
    assert torch.equal(xb, (x - im) / istd)
    argv = ["eval", "--model", RGB, "--data", path, "--normalize", "imagenet", "--mean", "0", "0", "0"]
    code, _, err = run(argv + ["--std", "1", "1", "1"], capsys)
    assert code == 2 and "--normalize/--mean/--std: give normalize='imagenet' or mean/std, not both" in err


def test_existing_layout_flags_keep_working(files, capsys):
    path = files / "nhwc_u8.npz"
    code, out, err = run(["eval", "--model", RGB, "--data", path, "--nhwc", "--scale", "0.5"], capsys)
    assert code == 0 and "note: --data" not in err  # both chosen by the user: nothing detected
    x, y = _images(path, scale=0.5)
    assert _top1(out, "ANN") == f"{100 * fxsnn.evaluate(tiny_model(), [(x, y)], progress=False).top1:.2f}"
    code, _, err = run(["eval", "--model", RGB, "--data", path, "--nchw"], capsys)  # detection off: wrong layout
    assert code == 2 and "channels-last" not in err


def test_channels_last_guess_without_the_model(files):
    from fxsnn.io.loaders import input_channels, load_data

    notes = []
    xb = next(iter(load_data(files / "nhwc_u8.npz", batch_size=60, report=lambda *a: notes.append(a))))[0]
    assert xb.shape == (60, 3, 8, 8)
    assert (
        "note",
        "x has shape [60, 8, 8, 3]: guessed channels-last [N, H, W, C] (the last dim is 3, dim 1 is 8; the model's "
        "input channels are not known) and permuted to [N, C, H, W] (nhwc=False if it is not; nhwc=True to force it)",
    ) in notes
    assert input_channels(tiny_model()) == 3 and input_channels(torch.nn.Linear(3, 3)) is None
    with pytest.warns(UserWarning, match=r"fxsnn.io.load_data: x is uint8 \(0..255\): divided by 255"):
        load_data(files / "nhwc_u8.npz")


def test_limit_applies_to_calibration_data_only_and_is_in_the_summary(files, capsys, tmp_path):
    path = files / "nhwc_u8.npz"
    argv = ["convert", "--model", RGB, "--data", path, "--T", "2", "--method", "fspc", "--out", tmp_path / "s.fxsnn"]
    code, out, err = run(argv + ["--limit", "20", "--random-subset", "--eval-data", path], capsys)
    assert code == 0, err
    assert f"--data {path}: 20 of 60 samples, a fixed random subset (--limit 20 --random-subset), 3 classes" in out
    assert f"--eval-data {path}: all 60 samples, 3 classes" in out
    assert "(60 samples)" in out.split("ANN: ")[1].splitlines()[0]  # the evaluation used every sample
    code, out, err = run(argv + ["--eval-data", path, "--eval-limit", "30"], capsys)
    assert code == 0, err
    assert f"--data {path}: all 60 samples" in out and f"--eval-data {path}: the first 30 of 60 samples" in out
    assert "(--eval-limit 30)" in out and "(30 samples)" in out.split("ANN: ")[1].splitlines()[0]
    code, _, err = run(argv + ["--eval-limit", "30"], capsys)
    assert code == 2 and "--eval-limit / --eval-random-subset apply to --eval-data" in err
    code, out, err = run(argv + ["--limit", "100"], capsys)  # a limit above the size takes every sample
    assert code == 0 and f"--data {path}: all 60 samples, 3 classes" in out


def test_data_covering_few_classes_warns(files, capsys, tmp_path):
    path = files / "sorted.npz"
    argv = ["convert", "--model", RGB, "--data", path, "--T", "2", "--method", "fspc", "--out", tmp_path / "s.fxsnn"]
    code, out, err = run(argv + ["--limit", "10", "--eval-data", path, "--eval-limit", "12"], capsys)
    assert code == 0, err
    assert (
        f"warning: --data {path}: the 10 samples used cover only 1 of the 3 classes the model outputs; accuracy on "
        "them is not an accuracy over the classes (the first 10 samples of a file sorted by class? add "
        "--random-subset or raise --limit)" in err
    )
    assert f"warning: --eval-data {path}: the 12 samples used cover only 1 of the 3" in err
    assert "add --eval-random-subset or raise --eval-limit" in err
    code, _, err = run(argv + ["--limit", "30", "--random-subset"], capsys)
    assert code == 0 and "cover only" not in err


def test_a_layout_matching_neither_dim_warns(tmp_path, capsys):
    g = np.random.RandomState(0)
    np.savez(tmp_path / "d5.npz", x=g.rand(6, 8, 8, 5).astype("float32"), y=g.randint(0, 3, 6))
    code, _, err = run(["eval", "--model", RGB, "--data", tmp_path / "d5.npz"], capsys)
    assert code == 2
    assert (
        f"warning: --data {tmp_path / 'd5.npz'}: x has shape [6, 8, 8, 5] but the model's first convolution takes 3 "
        "input channels, neither dim 1 nor the last dim; kept as it is (--nhwc / --nchw choose the layout)" in err
    )
