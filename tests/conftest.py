import os
import sys
import warnings
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from shared_data import RESNET20  # noqa: E402  (one loader for tests and benchmarks)
from shared_data import cifar as load_cifar  # noqa: E402, F401  (re-exported to the tests)

torch.set_num_threads(min(2, os.cpu_count() or 1))
warnings.filterwarnings("ignore", message=".*no channel ever activated.*")


needs_shared_data = pytest.mark.skipif(not RESNET20.exists(), reason="../shared/data (CIFAR-10 + ResNet-20) is absent")
