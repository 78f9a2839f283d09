"""fxsnn.loaders from Python: the bad-input cases of the command line, raised as fxsnn.io.loaders.InputError."""

import numpy as np
import pytest
import torch
from helpers import GrayResNet, fanout_net, tiny_resnet

from fxsnn.io.loaders import InputError, OnDevice, load_data, load_model, load_weights, parse_kwargs


def test_model_specs():
    assert isinstance(load_model("helpers:tiny_resnet"), GrayResNet)
    assert isinstance(load_model("helpers:GrayResNet"), GrayResNet)  # a class is called too
    assert load_model("fxsnn.models:cifar_resnet", depth=32).layer1[4] is not None
    assert load_model("resnet18", num_classes=7).fc.out_features == 7
    with pytest.raises(InputError, match="cannot import module 'no_such_pkg'"):
        load_model("no_such_pkg:f")
    with pytest.raises(InputError, match="has no attribute 'tiny_resnt'; did you mean tiny_resnet"):
        load_model("helpers:tiny_resnt")
    with pytest.raises(InputError, match="unknown model 'resnet181'.*resnet18"):
        load_model("resnet181")
    with pytest.raises(InputError, match="not a function, class or nn.Module"):
        load_model("helpers:__doc__")
    with pytest.raises(InputError, match=r"calling helpers:tiny_resnet\(width=2\) failed"):
        load_model("helpers:tiny_resnet", width=2)
    assert parse_kwargs(["depth=20", "name=abc", "xs=(1, 2)"]) == {"depth": 20, "name": "abc", "xs": (1, 2)}
    with pytest.raises(InputError, match="NAME=VALUE"):
        parse_kwargs(["20"])


def test_weights(tmp_path):
    torch.save(tiny_resnet(seed=1).state_dict(), tmp_path / "w.pt")
    m = load_weights(tiny_resnet(seed=2), tmp_path / "w.pt")
    assert torch.equal(m.conv1.weight, tiny_resnet(seed=1).conv1.weight)
    with pytest.raises(InputError, match=r"do not match the model Sequential: \d+ missing .*\d+ unexpected"):
        load_weights(fanout_net(), tmp_path / "w.pt")
    bad = tiny_resnet().state_dict()
    bad["fc.weight"] = torch.zeros(5, 64)
    torch.save({"model": bad}, tmp_path / "shape.pt")
    with pytest.raises(InputError, match=r"1 of another shape \(e.g. fc.weight: file \(5, 64\) vs model \(3, 64\)\)"):
        load_weights(tiny_resnet(), tmp_path / "shape.pt")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(InputError, match="does not hold a state dict"):
        load_weights(tiny_resnet(), tmp_path / "list.pt")
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(InputError, match="it must be a state dict saved with torch.save"):
        load_weights(tiny_resnet(), tmp_path / "junk.pt")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_weights(tiny_resnet(), tmp_path / "absent.pt")


def test_data(tmp_path):
    x = np.random.RandomState(0).rand(10, 8, 8, 3).astype("float32")
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(10) % 2)
    loader = load_data(tmp_path / "d.npz", batch_size=4, nhwc=True, scale=2.0, mean=[0.5] * 3, std=[0.25] * 3)
    xb, yb = next(iter(loader))
    assert xb.shape == (4, 3, 8, 8) and yb.dtype == torch.int64 and len(loader) == 3
    assert torch.allclose(xb, (torch.from_numpy(x[:4]).permute(0, 3, 1, 2) * 2 - 0.5) / 0.25)
    np.savez(tmp_path / "noy.npz", x=x)
    with pytest.raises(InputError, match=r"must hold arrays named 'x' \(inputs\) and 'y'.*\['x'\]"):
        load_data(tmp_path / "noy.npz")
    np.savez(tmp_path / "floaty.npz", x=x, y=np.zeros(10))
    with pytest.raises(InputError, match="integer class labels"):
        load_data(tmp_path / "floaty.npz")
    np.savez(tmp_path / "short.npz", x=x, y=np.zeros(3, dtype=int))
    with pytest.raises(InputError, match="x has 10 samples but y has 3"):
        load_data(tmp_path / "short.npz")
    (tmp_path / "imgs" / "cat").mkdir(parents=True)
    with pytest.raises(InputError, match="found no images under .*one subfolder per class"):
        load_data(tmp_path / "imgs")
    (tmp_path / "flat").mkdir()
    with pytest.raises(InputError, match="found no images under"):
        load_data(tmp_path / "flat")
    with pytest.raises(InputError, match="one value per channel"):
        load_data(tmp_path / "d.npz", mean=[0.5])
    (tmp_path / "d.csv").write_text("1,2\n")
    with pytest.raises(InputError, match="unknown data format"):
        load_data(tmp_path / "d.csv")
    (tmp_path / "broken.npz").write_bytes(b"not a zip")
    with pytest.raises(InputError, match="cannot read .* as a numpy .npz file"):
        load_data(tmp_path / "broken.npz")


def test_data_errors_name_the_loader_arguments_not_cli_flags(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.zeros((4, 2, 3, 3), dtype="float32"), y=np.zeros(4, dtype=int))
    np.savez(tmp_path / "flat.npz", x=np.zeros((4, 6), dtype="float32"), y=np.zeros(4, dtype=int))
    (tmp_path / "imgs" / "cat").mkdir(parents=True)
    Image = pytest.importorskip("PIL.Image")
    Image.new("RGB", (4, 4)).save(tmp_path / "imgs" / "cat" / "a.png")
    cases = [
        (dict(path=tmp_path / "flat.npz", nhwc=True), r"nhwc=True needs 4-D images", ("nhwc",)),
        (dict(path=tmp_path / "d.npz", limit=0), r"limit must be >= 1; got 0", ("limit",)),
        (dict(path=tmp_path / "d.npz", batch_size=0), r"batch_size must be >= 1; got 0", ("batch_size",)),
        (dict(path=tmp_path / "d.npz", std=[1.0]), "give mean and std together", ("mean", "std")),
        (  # nhwc=False: [4, 2, 3, 3] would be detected as channels-last (3 channels) by default
            dict(path=tmp_path / "d.npz", mean=[0.0] * 3, std=[1.0] * 3, nhwc=False),
            "mean/std give 3 channels",
            ("mean", "std"),
        ),
        (dict(path=tmp_path / "flat.npz", normalize="cifar10"), "normalize='cifar10' gives 3 channels", ("normalize",)),
        (
            dict(path=tmp_path / "d.npz", normalize="cifar"),
            "normalize must be one of imagenet, cifar10 or none",
            ("normalize",),
        ),
        (dict(path=tmp_path / "imgs", scale=2.0), r"scale applies to .npz data", ("scale",)),
    ]
    for kwargs, message, arguments in cases:
        with pytest.raises(InputError, match=message) as info:
            load_data(**kwargs)
        assert "--" not in str(info.value) and info.value.arguments == arguments
    (tmp_path / "d.csv").write_text("1,2\n")
    with pytest.raises(InputError) as info:
        load_data(tmp_path / "d.csv")
    assert info.value.arguments == ()  # the file itself, not an argument


def test_on_device_is_reiterable():
    loader = [(torch.zeros(2, 1), torch.ones(2, dtype=torch.long))]
    wrapped = OnDevice(loader, "cpu", torch.float64)
    first, second = list(wrapped), list(wrapped)
    assert len(wrapped) == 1 and first[0][0].dtype == torch.float64 and first[0][1].dtype == torch.long
    assert torch.equal(first[0][0], second[0][0])


def test_a_file_without_labels_loads_as_input_only_batches_where_labels_are_optional(tmp_path):
    from fxsnn.io.loaders import InputError, data_summary, load_data

    x = np.random.RandomState(0).randn(10, 3, 4, 4).astype("float32")
    np.savez(tmp_path / "x.npz", x=x)
    np.savez(tmp_path / "xy.npz", x=x, y=np.arange(10) % 2)
    loader = load_data(tmp_path / "x.npz", batch_size=4, labels=False, normalize="none")
    batches = list(loader)
    assert [len(b) for b in batches] == [1, 1, 1] and torch.equal(
        torch.cat([b[0] for b in batches]), torch.from_numpy(x)
    )
    s = data_summary(load_data(tmp_path / "x.npz", batch_size=4, labels=False, limit=6, normalize="none"))
    assert (s.used, s.total, s.selection, s.classes, s.labelled) == (6, 10, "first", 0, False)
    with_y = list(load_data(tmp_path / "xy.npz", batch_size=4, labels=False, normalize="none"))
    assert len(with_y[0]) == 2 and data_summary(load_data(tmp_path / "xy.npz", labels=False, normalize="none")).labelled
    with pytest.raises(InputError, match="must hold arrays named 'x'.*takes x alone"):
        load_data(tmp_path / "x.npz", normalize="none")  # labels required by default
    np.savez(tmp_path / "empty.npz", x=x[:0])
    with pytest.raises(InputError, match="holds no samples"):
        load_data(tmp_path / "empty.npz", labels=False, normalize="none")
