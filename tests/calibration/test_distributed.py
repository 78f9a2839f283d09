"""Data steps on many processes (fxsnn.calibration.distributed): 2 CPU ranks (gloo) against one process fed the
same global batches, and the faults — a rank that dies, raises, or has a non-finite loss — ending every rank."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from fxsnn.calibration import distributed

WORKER = Path(__file__).with_name("distributed_worker.py")
ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(scenario: str, out: Path, *, world: int | None, rank: int = 0, port: int = 0, timeout: float = 30):
    env = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    env["FXSNN_TEST_TIMEOUT"] = str(timeout)
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    if world is not None:
        env.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1")
        env["MASTER_PORT"] = str(port)
    cmd = [sys.executable, str(WORKER), scenario, str(out)]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _results(proc, timeout: float) -> dict:
    """``{scenario: result}`` of every attempt the worker reported."""
    stdout, stderr = proc.communicate(timeout=timeout)
    lines = [json.loads(ln) for ln in stdout.splitlines() if ln.startswith("{")]
    assert lines, f"the worker printed no result (rc {proc.returncode}):\n{stderr[-3000:]}"
    return {r["scenario"]: r for r in lines}


def _result(proc, timeout: float) -> dict:
    return next(iter(_results(proc, timeout).values()))


def _launch(scenario: str, out: Path, *, timeout: float = 30) -> list:
    port = _free_port()
    return [_start(scenario, out, world=2, rank=r, port=port, timeout=timeout) for r in range(2)]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """``(single, rank0, rank1)``: what the ``equal`` scenario computed in one process and on each of 2 ranks."""
    out = tmp_path_factory.mktemp("distributed")
    procs = [_start("equal", out, world=None), *_launch("equal", out)]
    for p in procs:
        assert _result(p, 180)["outcome"] == "ok"
    return [torch.load(out / name, weights_only=True) for name in ("single.pt", "rank0.pt", "rank1.pt")]


def _floats(d: dict) -> dict:
    return {k: v for k, v in d.items() if v.is_floating_point()}


def test_every_rank_gets_the_same_network(runs):
    _, r0, r1 = runs
    for part in ("front_None", "front_99.0", "fs", "bn", "stage1", "stage2", "snn"):
        for k in r0[part]:
            assert torch.equal(r0[part][k], r1[part][k]), (part, k)


def test_theta_is_bit_identical_to_one_process_on_the_global_batches(runs):
    """Running max (all-reduced with MAX) and percentile histograms (the global batch max before recording, the
    integer counts summed): θ of every site equals one process's bit for bit."""
    single, r0, _ = runs
    for part in ("front_None", "front_99.0", "fs"):
        thetas = [k for k in single[part] if k.endswith("theta")]
        assert thetas, part
        for k in thetas:
            assert torch.equal(single[part][k], r0[part][k]), (part, k)


def test_da_terms_and_bn_statistics_are_bit_identical_to_one_process(runs):
    """The DA error calibration's channel means and Eq. 10 (with the BNs normalising the global batch) are taken
    over the all-gathered global batch, as one process takes them."""
    single, r0, _ = runs
    for part in ("front_None", "front_99.0"):
        keys = [k for k in single[part] if k.endswith(("psi_da", "phi_da"))]
        assert keys, part
        for k in keys:
            assert torch.equal(r0[part][k], single[part][k]), (part, k)
    assert single["bn"]
    for k, v in single["bn"].items():
        assert torch.equal(r0["bn"][k], v), k
    for k in [k for k in single["snn"] if k.endswith(("running_mean", "running_var"))]:
        assert torch.equal(r0["snn"][k], single["snn"][k]), k  # Stage 1's Eq. 10 on the (identical) DA network


def test_trained_tensors_agree_with_one_process_up_to_reduction_order(runs):
    """Stage 1 (BN affine + θ), Stage 2 (Δb) and a full convert: gradients averaged over the global batch."""
    single, r0, _ = runs
    for part in ("stage1", "stage2", "snn"):
        for k, v in _floats(single[part]).items():
            torch.testing.assert_close(r0[part][k], v, rtol=1e-5, atol=1e-6, msg=f"{part} {k}")
    torch.testing.assert_close(torch.tensor(r0["stage2_losses"]), torch.tensor(single["stage2_losses"]))
    assert [s for s, _ in r0["stage2_holdout"]] == [s for s, _ in single["stage2_holdout"]]


def test_a_rank_that_dies_mid_stage_ends_the_others_with_an_fxsnn_error_not_a_hang(tmp_path):
    t0 = time.perf_counter()
    procs = _launch("kill", tmp_path, timeout=20)
    res0 = _result(procs[0], 60)
    procs[1].communicate(timeout=30)
    assert procs[1].returncode == 7  # it died (os._exit) at its 3rd Stage 1 loss
    assert res0["outcome"] == "raised" and res0["error"] == "RankFailure", res0
    assert "rank 0 of 2" in res0["message"] and "fxsnn.recalibrate_bn" in res0["message"]
    assert time.perf_counter() - t0 < 60


@pytest.fixture(scope="module")
def faults(tmp_path_factory):
    """Rank 0's and rank 1's results of the ``faults`` scenario: ``uneven``, ``nan``, then ``raise``."""
    procs = _launch("faults", tmp_path_factory.mktemp("faults"), timeout=120)
    try:
        rank0 = _results(procs[0], 150)  # the 'raise' attempt must end far below the 120 s process-group timeout
    finally:
        procs[1].kill()
    rank1 = _results(procs[1], 30)
    return rank0, rank1


def test_a_rank_that_raises_and_lingers_does_not_make_the_others_wait_for_the_timeout(faults):
    rank0, rank1 = faults
    assert rank1["raise"]["error"] == "ValueError"
    res = rank0["raise"]
    assert res["outcome"] == "raised" and res["error"] == "RankFailure", res
    assert "rank 1 raised ValueError in fxsnn.recalibrate_bn: rank 1 fails on purpose" in res["message"]
    assert res["seconds"] < 60


def test_a_non_finite_loss_on_one_rank_stops_every_rank_with_non_finite_loss_error(faults):
    results = [r["nan"] for r in faults]
    for res in results:
        assert res["outcome"] == "raised" and res["error"] == "NonFiniteLossError", res
        assert "step 3" in res["message"]
    assert "the loss is nan" in results[1]["message"]
    assert "rank(s) 1" in results[0]["message"]


def test_every_rank_refuses_batch_counts_that_differ(faults):
    for res in [r["uneven"] for r in faults]:
        assert res["outcome"] == "raised" and res["error"] == "DataError", res
        assert "between 5 and 6 batches per pass" in res["message"] and "DistributedSampler" in res["message"]


def test_without_a_process_group_every_helper_is_the_identity():
    assert not distributed.active() and distributed.rank() == 0 and distributed.world_size() == 1
    t = torch.tensor([1.0, -2.0])
    assert distributed.all_max_(t, where="x") is t and torch.equal(t, torch.tensor([1.0, -2.0]))
    p = torch.zeros(2, requires_grad=True)
    p.grad = torch.ones(2)
    assert distributed.reduce_step_([p], 4, None, 0.5, where="x") == (None, 0.5)
    assert torch.equal(p.grad, torch.ones(2))
    assert distributed.same_count(3, what="batches", where="x") == 3


def test_a_dataloader_without_distributed_sampler_gets_a_warning_under_a_process_group(tmp_path, monkeypatch):
    from torch.utils.data import DataLoader, TensorDataset
    from torch.utils.data.distributed import DistributedSampler

    from fxsnn.io.loaders import OnDevice

    loader = DataLoader(TensorDataset(torch.zeros(4, 1)), batch_size=2)
    sharded = DataLoader(loader.dataset, batch_size=2, sampler=DistributedSampler(loader.dataset, 2, 0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        distributed.check_sharded(loader, where="fxsnn.convert")  # no process group: nothing to warn about
    # two ranks, patched in (a real second rank costs a process; the launches above cover the collectives)
    monkeypatch.setattr(distributed, "active", lambda: True)
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        distributed.check_sharded(loader, where="fxsnn.convert")
        distributed.check_sharded(OnDevice(loader), where="fxsnn.convert")  # seen through the wrapper
        distributed.check_sharded(sharded, where="fxsnn.convert")
        distributed.check_sharded(OnDevice(sharded), where="fxsnn.convert")
        distributed.check_sharded([(torch.zeros(2, 1),)], where="fxsnn.convert")  # a list is the rank's shard
    assert len(caught) == 2
    assert "fxsnn.convert" in str(caught[0].message) and "DistributedSampler" in str(caught[0].message)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_on_cuda_each_rank_uses_its_local_gpu_and_gets_the_same_network(tmp_path, monkeypatch):
    """The CUDA path: each rank on ``cuda:LOCAL_RANK`` (NCCL with a GPU per rank; gloo on CUDA tensors when the
    ranks share one GPU). Every rank gets the same network; against one process on the GPU θ is only close (cuDNN
    may pick other kernels for another batch size, so the activations themselves may differ in the last bit)."""
    monkeypatch.setenv("FXSNN_TEST_DEVICE", "cuda")
    procs = [_start("equal", tmp_path, world=None)]
    procs[0].communicate(timeout=300)
    for p in _launch("equal", tmp_path):
        assert _result(p, 300)["outcome"] == "ok"
    single, r0, r1 = (torch.load(tmp_path / n, weights_only=True) for n in ("single.pt", "rank0.pt", "rank1.pt"))
    for part in ("front_99.0", "snn"):
        for k, v in _floats(single[part]).items():
            assert torch.equal(r0[part][k], r1[part][k]), (part, k)
            torch.testing.assert_close(r0[part][k], v, rtol=1e-3, atol=1e-4, msg=f"{part} {k}")


def test_torchrun_runs_the_cli_convert_and_only_rank_0_prints_and_writes(tmp_path):
    """``torchrun --nproc_per_node 2 -m fxsnn.cli convert ...`` (gloo on CPU): one saved file, printed once."""
    import numpy as np

    import fxsnn

    g = np.random.RandomState(0)
    np.savez(tmp_path / "data.npz", x=g.randn(48, 1, 8, 8).astype("float32"), y=g.randint(0, 3, 48))
    tests = ROOT / "tests"
    env = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{tests}", OMP_NUM_THREADS="1")
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port())]
    cmd += ["-m", "fxsnn.cli", "convert", "--model", "helpers:tiny_resnet", "--data", str(tmp_path / "data.npz")]
    cmd += ["--T", "2", "--method", "full", "--set", "stage1.epochs=1", "--set", "stage2.holdout=None"]
    cmd += ["--batch-size", "8", "--timeout", "60", "--out", str(tmp_path / "snn.fxsnn")]
    proc = subprocess.run(cmd, env=env, cwd=tests, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("saved ") == 1, proc.stdout
    from helpers import tiny_resnet

    snn = fxsnn.load(tmp_path / "snn.fxsnn", model=tiny_resnet())
    report = snn.meta["fxsnn.convert"]
    assert report["method"] == "full"
