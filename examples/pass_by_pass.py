"""Walk a CIFAR ResNet-20 through every data-free pass and print what each one did.

Uses the shared off-the-shelf checkpoint and CIFAR-10 when ../shared/data exists, random weights and
random calibration tensors otherwise.

    python examples/pass_by_pass.py
"""

from pathlib import Path

import torch

import fxsnn

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def main():
    torch.manual_seed(0)
    weights = SHARED / "models" / "resnet20-12fca82f.th"
    model = fxsnn.models.cifar_resnet(20, weights=weights if weights.exists() else None).eval()
    data = [torch.randn(64, 3, 32, 32) for _ in range(4)]  # any iterable of batches works, e.g. a DataLoader

    gm = fxsnn.trace(model)
    print(fxsnn.find_sites(gm))  # 19 F.relu calls: conv→bn→relu and add→relu sites

    gm = fxsnn.passes.insert_recorders(gm, percentile=99.9)
    gm = fxsnn.calibrate(gm, data)
    print(gm.get_submodule("layer1.0.relu"))  # ActivationRecorder(channels=16, theta=p99.9, batches=4)

    q = fxsnn.passes.to_da_qcfs(gm, levels=4)
    q = fxsnn.calibrate_da(q, data)
    print(q.get_submodule("layer1.0.relu"))  # DAQCFS(channels=16, levels=4, theta=[...], psi_da=[...], ...)

    snn = fxsnn.passes.lower_to_paraif(q, T=4, mode="rate")
    print(snn.get_submodule("layer1.0.relu"))  # ParallelIF(channels=16, T=4, mode=rate, ...)
    x = data[0][:8]
    with torch.no_grad():
        print("rate mode == DA-QCFS network:", torch.equal(snn(x), q(x)))
        fxsnn.set_mode(snn, "spike")
        print("spike mode logits close:", torch.allclose(snn(x), q(x), atol=1e-3))
        print("serial reference runs:", tuple(fxsnn.passes.to_serial(snn)(x).shape))
    snn.print_readable()


if __name__ == "__main__":
    main()
