"""One rank of the tests' distributed runs (tests/calibration/test_distributed.py launches it).

``python distributed_worker.py SCENARIO OUT``: with ``RANK`` / ``WORLD_SIZE`` / ``MASTER_ADDR`` / ``MASTER_PORT`` in
the environment it joins a gloo process group (timeout ``FXSNN_TEST_TIMEOUT`` seconds) and works on its shard of
the global data; without them it is the single process fed the global batches. It prints one JSON line per
attempt, ``{"scenario", "rank", "outcome", "error", "message", "seconds"}``, and for ``equal`` saves what it
computed to ``OUT/rank<r>.pt`` (``OUT/single.pt`` for the single process).

Scenarios: ``equal`` (θ, DA terms, BN statistics, the stages and a full ``convert``), ``kill`` (rank 1 dies with
``os._exit`` at its 3rd Stage 1 loss), ``faults``: three converts in a row — ``uneven`` (rank 1 has one batch
fewer), ``nan`` (rank 1's 3rd Stage 1 loss is NaN), ``raise`` (rank 1 raises at its 3rd Stage 1 loss, then
lingers 60 s without exiting).
``FXSNN_TEST_DEVICE=cuda``: ``equal`` on each rank's GPU (``LOCAL_RANK``), NCCL when every rank has its own.
"""

from __future__ import annotations

import datetime
import json
import os
import sys
import time
import warnings

import torch
import torch.distributed as dist
import torch.nn.functional as F

import fxsnn
from fxsnn.calibration import reestimate_bn_stats
from fxsnn.config import ConvertConfig
from fxsnn.passes import lower_to_paraif

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from helpers import tiny_data, tiny_model  # noqa: E402

torch.set_num_threads(1)
warnings.filterwarnings("ignore")

CONFIG = ConvertConfig().override("stage1.epochs=1", "stage2.train.holdout=1", "stage2.train.eval_every=2")


def shard(rank: int, world: int) -> list:
    """Rank ``rank``'s part of each global batch (16 samples; 6 batches): rows ``[r·16/world, (r+1)·16/world)``."""
    step = 16 // world
    return [(x[rank * step : (rank + 1) * step], y[rank * step : (rank + 1) * step]) for x, y in tiny_data()]


def equal(data: list, device: torch.device) -> dict:
    model = tiny_model().to(device)
    data = [(x.to(device), y.to(device)) for x, y in data]
    out = {}
    for pct in (None, 99.0):
        da = fxsnn.front_end(model, data, levels=4, percentile=pct, progress=False)
        out[f"front_{pct}"] = {k: v.cpu() for k, v in da.state_dict().items()}
    # the stages on a network that is bit-identical on every rank (FS-PC: θ only), so that what they compute
    # is compared alone (a DA network's ψ_DA, φ_DA agree to rounding only, which a quantizer can amplify)
    fs = fxsnn.front_end(model, data, levels=4, percentile=99.0, da=False, progress=False)
    out["fs"] = {k: v.cpu() for k, v in fs.state_dict().items()}
    bn = reestimate_bn_stats(fs, data, progress=False)
    out["bn"] = {k: v.cpu() for k, v in bn.state_dict().items() if "running" in k}
    s1 = fxsnn.recalibrate_bn(fs, data, epochs=1, progress=False)
    out["stage1"] = {k: v.cpu() for k, v in s1.state_dict().items()}
    s2 = fxsnn.tune_delta_b(lower_to_paraif(fs, T=4), data, epochs=1, holdout=1, eval_every=2, progress=False)
    out["stage2"] = {k: v.cpu() for k, v in s2.state_dict().items()}
    snn = fxsnn.convert(model, data, T=4, method="full", config=CONFIG, progress=False)
    out["snn"] = {k: v.cpu() for k, v in snn.state_dict().items()}
    out["stage2_losses"] = snn.meta["fxsnn.stage2"].losses
    out["stage2_holdout"] = snn.meta["fxsnn.stage2"].holdout
    return out


def faulty_loss(scenario: str, rank: int):
    calls = [0]

    def loss_fn(logits, y):
        calls[0] += 1
        loss = F.cross_entropy(logits, y)
        if rank == 1 and calls[0] == 3 and scenario != "none":
            if scenario == "kill":
                os._exit(7)
            if scenario == "raise":
                raise ValueError("rank 1 fails on purpose")
            return loss * float("nan")
        return loss

    return loss_fn


def _attempt(scenario: str, rank: int, fn) -> None:
    """Run ``fn()`` and print one JSON line: what happened."""
    t0 = time.perf_counter()
    result = {"scenario": scenario, "rank": rank, "outcome": "ok", "error": None, "message": None}
    try:
        fn()
    except Exception as exc:  # noqa: BLE001 - reported to the test
        result.update(outcome="raised", error=type(exc).__name__, message=str(exc))
    result["seconds"] = time.perf_counter() - t0
    print(json.dumps(result), flush=True)


def _convert(data: list, scenario: str, rank: int):
    return lambda: fxsnn.convert(
        tiny_model(), data, T=4, config=CONFIG, progress=False, loss_fn=faulty_loss(scenario, rank)
    )


def main() -> None:
    scenario, out_dir = sys.argv[1], sys.argv[2]
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    device, backend = torch.device("cpu"), "gloo"
    if os.environ.get("FXSNN_TEST_DEVICE") == "cuda":  # each rank on its local GPU; NCCL when there is one each
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
        torch.cuda.set_device(device)
        backend = "nccl" if torch.cuda.device_count() >= world else "gloo"
    if world > 1:
        timeout = datetime.timedelta(seconds=float(os.environ.get("FXSNN_TEST_TIMEOUT", "30")))
        dist.init_process_group(backend, timeout=timeout)
    data = shard(rank, world)
    if scenario == "equal":
        name = f"rank{rank}.pt" if world > 1 else "single.pt"
        _attempt(scenario, rank, lambda: torch.save(equal(data, device), os.path.join(out_dir, name)))
    elif scenario == "kill":
        _attempt(scenario, rank, _convert(data, "kill", rank))
    else:  # "faults": three in a row, the one that breaks the job last
        _attempt("uneven", rank, _convert(data[:-1] if rank == 1 else data, "none", rank))
        _attempt("nan", rank, _convert(data, "nan", rank))
        _attempt("raise", rank, _convert(data, "raise", rank))
        if rank == 1:
            time.sleep(60)  # a failed rank that does not exit: the others must not wait for it
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
