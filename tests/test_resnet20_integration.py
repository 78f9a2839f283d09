"""The real thing, small: ResNet-20 on CIFAR-10 at T = 4, `full` against the FS-PC baseline (needs ../shared/data)."""

import pytest
from conftest import RESNET20, load_cifar, needs_shared_data
from torch.utils.data import DataLoader, TensorDataset

import fxsnn

pytestmark = [needs_shared_data, pytest.mark.shared_data, pytest.mark.slow]


@pytest.fixture(scope="module")
def cifar():
    cal_x, cal_y = load_cifar("train_10k", n=2560, seed=0)  # fixed permutation: the files are sorted by class
    test_x, test_y = load_cifar("test", n=2000, seed=0)
    cal = DataLoader(TensorDataset(cal_x, cal_y), batch_size=128, shuffle=True)
    test = [(test_x[i : i + 500], test_y[i : i + 500]) for i in range(0, 2000, 500)]
    return cal, test


def test_full_beats_fspc_clearly_at_T4(cifar):
    cal, test = cifar
    model = fxsnn.models.cifar_resnet(20, weights=RESNET20).eval()
    base = fxsnn.convert(model, cal, T=4, method="fspc", progress=False)
    config = fxsnn.ConvertConfig().override("stage1.epochs=2", "calibration_batches=10")
    full = fxsnn.convert(model, cal, T=4, method="full", config=config, progress=False)
    acc = {
        name: fxsnn.evaluate(fxsnn.set_mode(net, "rate"), test, progress=False).top1
        for name, net in (("fspc", base), ("full", full))
    }
    # measured on this slice: fspc 0.467, full 0.752 (about 22 s on 2 idle cores; no timing assertion: the machine is shared): a margin far above run-to-run noise
    assert acc["full"] >= acc["fspc"] + 0.15, acc
    assert acc["full"] >= 0.6, acc
