"""The ``fxsnn`` command: convert, eval, inspect, analyze, demo.

Exit codes: 0 success; 1 the run failed (a conversion or calibration error, or
an unexpected error — add ``--traceback`` to see it); 2 bad command line or
input (a model spec that does not import, weights that do not match, a data
file without x/y, a missing file or directory, an unknown layer); 130
interrupted; 141 the output pipe was closed (``fxsnn inspect F | head -1``).

Nothing here imports torch until the arguments are parsed, and nothing
imports from the working directory except the module a ``--model`` spec names.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.abc
import importlib.machinery
import importlib.util
import io
import json
import os
import re
import sys
import traceback
from typing import TYPE_CHECKING

from .parser import build_parser

if TYPE_CHECKING:
    from torch import fx, nn

    from ..io.loaders import OnDevice
    from ..report.analysis import Report
    from ..report.energy import EnergyModel

__all__ = ["main", "COMMANDS"]


class _InputProblem(Exception):
    """Raised inside a command for a user-fixable problem found before any work starts (exit 2)."""


# -- shared steps -----------------------------------------------------------------------
def _check_out(path: str | None, flag: str) -> None:
    """``fxsnn.io.paths.check_writable`` before any work, its message prefixed with the option (exit 2)."""
    from ..io.paths import check_writable

    if path is None:
        return
    try:
        check_writable(path)
    except OSError as exc:
        raise _InputProblem(f"{flag} {exc}") from None


def _write_json(path: str, data, flag: str) -> None:
    """Serialise first, then write atomically: a failure leaves no empty or partial file."""
    from ..io.archive import write_atomic

    text = json.dumps(data, indent=2)
    try:
        write_atomic(path, text.encode())
    except OSError as exc:
        raise _InputProblem(f"{flag} {path}: could not write it ({exc.strerror}); nothing was written") from None


class _OneModule(importlib.abc.MetaPathFinder):
    """Finds one top-level module (or package) in the working directory, and nothing else."""

    def __init__(self, name: str, spec):
        self.name, self.spec = name, spec

    def find_spec(self, fullname, path=None, target=None):
        return self.spec if fullname == self.name else None


@contextlib.contextmanager
def _cwd_module(spec: str | None):
    """While a ``--model pkg.mod:fn`` is built: ``pkg`` may come from the working directory if nothing else has it."""
    finder = None
    top = spec.partition(":")[0].split(".")[0] if spec and ":" in spec else ""
    if top.isidentifier() and top not in sys.modules and importlib.util.find_spec(top) is None:
        found = importlib.machinery.PathFinder.find_spec(top, [os.getcwd()])
        if found is not None:
            finder = _OneModule(top, found)
            sys.meta_path.append(finder)
    try:
        yield
    finally:
        if finder is not None:
            sys.meta_path.remove(finder)


def _check_device(args: argparse.Namespace) -> None:
    import torch

    name = getattr(args, "device", None)
    if name is None:
        return
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError) as exc:
        raise _InputProblem(f"--device {name!r} is not a torch device ({exc}); use cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise _InputProblem(f"--device {name}: CUDA is not available on this machine; use --device cpu")


def _model(args: argparse.Namespace) -> nn.Module:
    from ..io.loaders import load_model, load_weights, parse_kwargs

    if getattr(args, "built_model", None) is not None:  # one ANN per run (the SNN is rebuilt from it too)
        return args.built_model
    with _cwd_module(args.model):
        model = load_model(args.model, **parse_kwargs(args.model_arg))
    if args.weights:
        load_weights(model, args.weights)
    elif getattr(args, "command", "") in ("convert", "analyze", "eval"):
        print(f"note: no --weights given; {args.model} keeps its initial (untrained) weights", file=sys.stderr)
    args.built_model = model.to(args.device).eval()
    return args.built_model


# the flag of each load_data argument that an InputError or a note can name
_DATA_FLAGS = {
    "batch_size": "--batch-size",
    "limit": "--limit",
    "nhwc": "--nhwc",
    "scale": "--scale",
    "mean": "--mean",
    "std": "--std",
    "normalize": "--normalize",
    "random_subset": "--random-subset",
}
_EVAL_FLAGS = {**_DATA_FLAGS, "limit": "--eval-limit", "random_subset": "--eval-random-subset"}


def _spelling(flags: dict[str, str]):
    """How a note from the loaders names an argument: as this command's flag (``nhwc=False`` is ``--nchw``)."""

    def spell(name: str, value: object = ...) -> str:
        if name == "nhwc" and value is not ...:
            return "--nhwc" if value else "--nchw"
        flag = flags.get(name, "--" + name.replace("_", "-"))
        if value is ...:
            return flag
        return f"{flag} {value:.8g}" if isinstance(value, float) else f"{flag} {value}"

    return spell


def _data(
    args: argparse.Namespace, path: str, *, shuffle: bool = False, evaluation: bool = False, labels: bool = True
) -> OnDevice:
    """``path`` through ``load_data`` with the data flags (``--eval-limit`` / ``--eval-random-subset`` for
    ``--eval-data``); what the loaders detect is printed as a note or warning naming ``path`` and the flag.
    ``labels=False``: a file without labels is accepted (label-free calibration)."""
    from torch.utils.data import DataLoader

    from ..io.loaders import InputError, OnDevice, input_channels, load_data

    flags = _EVAL_FLAGS if evaluation else _DATA_FLAGS
    source = "--eval-data" if evaluation else "--data"

    def report(level: str, text: str) -> None:
        print(f"{level}: {source} {path}: {text}", file=sys.stderr)

    model = getattr(args, "built_model", None)
    try:
        loader = load_data(
            path,
            batch_size=args.batch_size,
            limit=args.eval_limit if evaluation else args.limit,
            nhwc=args.nhwc,
            scale=args.scale,
            mean=args.mean,
            std=args.std,
            normalize=args.normalize,
            image_size=args.image_size,
            random_subset=args.eval_random_subset if evaluation else args.random_subset,
            channels=input_channels(model) if model is not None else None,
            report=report,
            spell=_spelling(flags),
            labels=labels,
        )
    except InputError as exc:
        shown = [flags[a] for a in exc.arguments if a in flags]
        if not shown:
            raise
        raise _InputProblem(f"{'/'.join(shown)}: {exc}") from exc
    _check_classes(args, loader, source, path, flags)
    if shuffle and _world() > 1:  # this rank's shard (padded to the same length on every rank), reshuffled by seed
        from torch.utils.data.distributed import DistributedSampler

        sampler = DistributedSampler(loader.dataset, shuffle=True, seed=args.seed)
        loader = DataLoader(loader.dataset, batch_size=args.batch_size, sampler=sampler)
    elif shuffle:
        loader = DataLoader(loader.dataset, batch_size=args.batch_size, shuffle=True)
    return OnDevice(loader, args.device)


def _model_classes(args: argparse.Namespace, loader) -> int | None:
    """The number of classes the model outputs, from one sample (``None`` when it cannot tell)."""
    import torch

    model = getattr(args, "built_model", None)
    if model is None:
        return None
    if getattr(args, "model_classes", None) is None:
        try:
            with torch.no_grad():
                out = model(loader.dataset[0][0].unsqueeze(0).to(args.device))
            args.model_classes = int(out.shape[1]) if isinstance(out, torch.Tensor) and out.dim() == 2 else 0
        except Exception:  # noqa: BLE001 - only a hint for a warning; the conversion's checks name the real problem
            args.model_classes = 0
    return args.model_classes or None


def _check_classes(args: argparse.Namespace, loader, source: str, path: str, flags: dict[str, str]) -> None:
    """Record the data's summary for the run summary; warn when it covers fewer than half the classes."""
    from ..io.loaders import data_summary

    summary = data_summary(loader)
    args.data_summaries = [*getattr(args, "data_summaries", []), (source, path, summary, flags)]
    if not summary.labelled:
        return
    outputs = _model_classes(args, loader)
    expected = max(outputs or 0, summary.label_range)
    if 2 * summary.classes >= expected:
        return
    of = (
        f"{outputs} classes the model outputs"
        if outputs and outputs >= summary.label_range
        else (f"{summary.label_range} classes of the file's labels (0..{summary.label_range - 1})")
    )
    if summary.selection == "first":
        fix = f"the first {summary.used} samples of a file sorted by class? add {flags['random_subset']} or raise {flags['limit']}"
    elif summary.selection == "random":
        fix = f"raise {flags['limit']}"
    else:
        fix = "give data with every class"
    print(
        f"warning: {source} {path}: the {summary.used} samples used cover only {summary.classes} of the {of}; "
        f"accuracy on them is not an accuracy over the classes ({fix})",
        file=sys.stderr,
    )


def _data_lines(args: argparse.Namespace) -> list[str]:
    """One run-summary line per data source: samples used, how chosen, classes covered."""
    lines = []
    for source, path, s, flags in getattr(args, "data_summaries", []):
        if s.selection == "all":
            how = f"all {s.total} samples"
        elif s.selection == "first":
            how = f"the first {s.used} of {s.total} samples ({flags['limit']} {s.used})"
        else:
            how = f"{s.used} of {s.total} samples, a fixed random subset ({flags['limit']} {s.used} {flags['random_subset']})"
        labels = f"{s.classes} class{'' if s.classes == 1 else 'es'}" if s.labelled else "no labels"
        lines.append(f"{source} {path}: {how}, {labels}")
    return lines


def _world() -> int:
    """The number of ranks: torch.distributed's, or ``WORLD_SIZE`` under torchrun before the group is joined."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def _join_process_group(args: argparse.Namespace) -> bool:
    """Under ``torchrun --nproc_per_node N`` (``WORLD_SIZE`` > 1): join the process group — NCCL with this rank on
    ``cuda:LOCAL_RANK`` for ``--device cuda``, gloo on CPU — with ``--timeout`` seconds; True if it joined one."""
    import datetime

    import torch
    import torch.distributed as dist

    if _world() <= 1 or dist.is_initialized():
        return False
    cuda = torch.device(args.device).type == "cuda"
    if cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        args.device = f"cuda:{local}"
    dist.init_process_group("nccl" if cuda else "gloo", timeout=datetime.timedelta(seconds=args.timeout))
    return True


def _recorded_model(header: dict) -> tuple[str | None, dict]:
    ann = header.get("ann") if isinstance(header.get("ann"), dict) else {}
    spec, margs = ann.get("spec"), ann.get("args")
    return (spec if isinstance(spec, str) else None), (margs if isinstance(margs, dict) else {})


def _shown_model(spec: str, margs: dict) -> str:
    return _clean(f"--model {spec}" + "".join(f" --model-arg {k}={v!r}" for k, v in margs.items()))


def _load_snn(args, path: str):
    """The SNN in ``path``, rebuilt from the ANN the user names with --model (never from code the file names)."""
    from ..io.loaders import parse_kwargs
    from ..io.saving import load, read_header

    spec, margs = _recorded_model(read_header(path))
    if not args.model:
        hint = f" It records {_shown_model(spec, margs)} (add --weights)." if spec else ""
        raise _InputProblem(
            f"--snn {path}: give the ANN it was converted from with --model SPEC; the file holds no code and fxsnn "
            f"imports only the model you name.{hint}"
        )
    if spec == args.model and margs and not args.model_arg:
        args.model_arg = [f"{k}={v!r}" for k, v in margs.items()]
        print(f"note: using the model arguments {path} records: {_shown_model(spec, margs)}", file=sys.stderr)
    elif spec and (spec != args.model or parse_kwargs(args.model_arg) != margs):
        print(f"note: {path} was converted from {_shown_model(spec, margs)}", file=sys.stderr)
    return load(path, model=_model(args), map_location=args.device)


def _clean(text: str) -> str:
    """Text from a file, safe for a terminal: control characters (escape sequences) become '?'."""
    return re.sub(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]", "?", str(text))


# -- commands ---------------------------------------------------------------------------
def _cmd_convert(args: argparse.Namespace) -> int:
    from ..config import ConvertConfig
    from ..conversion import convert
    from ..io.loaders import parse_kwargs
    from ..io.saving import save
    from ..report.evaluation import evaluate
    from ..report.summarize import summary

    try:
        cfg = ConvertConfig.recipe(args.recipe).override(*args.set)
    except (TypeError, ValueError) as exc:
        raise _InputProblem(str(exc)) from None
    if args.T < 1:
        raise _InputProblem(f"--T must be >= 1; got {args.T}")
    if not args.timeout > 0:
        raise _InputProblem(f"--timeout must be a number of seconds > 0; got {args.timeout}")
    model_args = parse_kwargs(args.model_arg)
    try:
        json.dumps(model_args, allow_nan=False)  # recorded in the file, so JSON data only
    except (TypeError, ValueError):
        raise _InputProblem("--model-arg values must be numbers, strings, lists or dicts (they are recorded)") from None
    _check_out(args.out, "--out")
    if not args.eval_data and (args.eval_limit is not None or args.eval_random_subset):
        raise _InputProblem("--eval-limit / --eval-random-subset apply to --eval-data; give --eval-data PATH")
    joined = _join_process_group(args)
    try:
        model = _model(args)
        data = _data(args, args.data, shuffle=True, labels="labels" in cfg.objectives(args.method))
        trace_args = {"leaf_modules": args.leaf_module, "concrete_args": parse_kwargs(args.concrete_arg) or None}
        snn = convert(
            model,
            data,
            T=args.T,
            method=args.method,
            seed=args.seed,
            config=cfg,
            allow_analog=args.allow_analog,
            **trace_args,
        )
    finally:
        if joined:
            import torch.distributed as dist

            dist.destroy_process_group()
    if int(os.environ.get("RANK", "0") or 0) != 0:
        return 0  # every rank holds the same network: rank 0 alone writes and prints
    eval_data = _data(args, args.eval_data, evaluation=True) if args.eval_data else None
    save(snn, args.out, model_spec=args.model, model_args=model_args)
    print(summary(snn))
    print(f"\nwhat each stage did (method={args.method}, T={args.T}):")
    print(snn.meta["fxsnn.convert"]["stages"])
    print("\n".join(_data_lines(args)))
    if eval_data is not None:
        ann_res, snn_res = evaluate(model, eval_data), evaluate(snn, eval_data)
        print(f"ANN: {ann_res}\nSNN: {snn_res}  (T={args.T}, method={args.method})")
    print(f"saved {args.out}")
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    from ..modes import get_mode, set_mode, time_steps
    from ..report.evaluation import evaluate

    if not args.snn and not args.model:
        raise _InputProblem("give --snn FILE, --model SPEC, or both")
    snn = _load_snn(args, args.snn) if args.snn else None
    model = _model(args) if args.model else None
    data = _data(args, args.data)
    rows = []
    if model is not None:
        r = evaluate(model, data)
        rows.append(("ANN", args.model, "-", f"{100 * r.top1:.2f}", f"{r.loss:.4f}", r.samples))
    if snn is not None:
        if args.mode:
            set_mode(snn, args.mode)
        r = evaluate(snn, data)
        rows.append(
            (f"SNN ({get_mode(snn)})", args.snn, time_steps(snn), f"{100 * r.top1:.2f}", f"{r.loss:.4f}", r.samples)
        )
    print(tabulate(rows, headers=("network", "source", "T", "top-1 %", "loss", "samples"), disable_numparse=True))
    if snn is not None:
        from ..graph.sites import find_hybrid_ops

        note = find_hybrid_ops(snn).hybrid_note()
        if note:
            print(f"\n{args.snn}: {note}")
    print("\n".join(_data_lines(args)))
    return 0


def _cmd_inspect(args) -> int:
    """Header, recorded summary, stage report and graph code: read from the file's JSON, nothing rebuilt, imported
    or run."""
    from ..io.saving import header_stages, header_summary, read_header

    _check_out(args.csv, "--csv")
    header = read_header(args.path)
    keys = ("stage", "T", "mode", "sites", "hybrid", "delta_b_params", "parameters", "fxsnn_version", "torch_version")
    print(_clean(f"{args.path}: " + ", ".join(f"{k}={header[k]}" for k in keys if k in header)))
    conv = header.get("conversion")
    if isinstance(conv, dict):
        print(_clean(f"converted with method={conv.get('method')}, T={conv.get('T')}, seed={conv.get('seed')}"))
    spec, margs = _recorded_model(header)
    if spec:
        print(f"model: {_shown_model(spec, margs)} (give it to eval / analyze with --snn; fxsnn never imports it)")
    s = header_summary(header)
    if s is not None:
        print()
        print(_clean(str(s)))
        if args.csv:
            s.to_csv(args.csv)
    stages = header_stages(header)
    if stages is not None:
        print("\nwhat each stage did:")
        print(_clean(str(stages)))
    if not args.no_graph:
        text = header.get("code", header.get("module_repr"))
        if isinstance(text, str):
            print()
            print(_clean(text))  # the recorded text: printed, never executed
    return 0


def _layer_tokens(text: str | None, names: list[str]) -> list[str | int] | None:
    if text is None:
        return None
    out = []
    for tok in (t.strip() for t in text.split(",")):
        if not tok:
            continue
        if tok in names:
            out.append(tok)
        else:
            try:
                out.append(int(tok))
            except ValueError:
                out.append(tok)
    return out


def _check_analyze_outputs(args: argparse.Namespace) -> None:
    """Every output path of ``analyze`` can be written; plots are PNGs and matplotlib is there."""
    for path, flag in (
        (args.plot, "--plot"),
        (args.plot_layers, "--plot-layers"),
        (args.csv, "--csv"),
        (args.energy_csv, "--energy-csv"),
        (args.json, "--json"),
    ):
        _check_out(path, flag)
    for path, flag in ((args.plot, "--plot"), (args.plot_layers, "--plot-layers")):
        if path and not path.lower().endswith(".png"):
            raise _InputProblem(f"{flag} {path}: plots are PNG files; give a name ending in .png")
    if args.plot or args.plot_layers:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise _InputProblem("--plot needs matplotlib: pip install 'fxsnn[plot]'") from None


def _energy_model(args: argparse.Namespace) -> EnergyModel:
    from ..report.energy import EnergyModel

    try:
        return EnergyModel(e_mac=args.e_mac, e_ac=args.e_ac)
    except ValueError as exc:
        raise _InputProblem(str(exc)) from None


def _analyze_layers(args: argparse.Namespace, snn: fx.GraphModule) -> list[str | int] | None:
    """``--layers`` as names and indices, checked against the SNN's sites before any work starts."""
    from ..graph.sites import find_sites
    from ..report.analysis import resolve_layers

    names = [s.name for s in find_sites(snn) if s.kind == "ParallelIF"]
    layers = _layer_tokens(args.layers, names)
    try:
        resolve_layers(layers, names, where="--layers")
    except (TypeError, ValueError) as exc:
        raise _InputProblem(str(exc)) from None
    return layers


def _write_analysis(args: argparse.Namespace, report: Report) -> None:
    """The files ``analyze`` was asked for: CSV tables, JSON, plots."""
    if args.csv:
        report.to_csv(args.csv)
    if args.energy_csv:
        report.to_csv(args.energy_csv, table="energy")
    if args.json:
        _write_json(args.json, report.to_dict(), "--json")
    if args.plot or args.plot_layers:
        from ..report.plots import plot_distributions, plot_layers

        if args.plot:
            print(f"wrote {plot_distributions(report, None, args.plot)}")
        if args.plot_layers:
            print(f"wrote {plot_layers(report, args.plot_layers)}")


def _cmd_analyze(args: argparse.Namespace) -> int:
    from ..errors import ConversionError
    from ..report.analysis import analyze

    _check_analyze_outputs(args)
    energy = _energy_model(args)
    snn = _load_snn(args, args.snn)
    layers = _analyze_layers(args, snn)
    model = _model(args)
    data = _data(args, args.data)
    try:
        report = analyze(
            model, snn, data, layers=layers, energy=energy, mode=args.mode, max_batches=args.batches, serial=args.serial
        )
    except ConversionError as exc:  # the ANN given does not match the SNN: an input problem
        raise _InputProblem(str(exc)) from None
    print(report)
    print("\n".join(_data_lines(args)))
    _write_analysis(args, report)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    try:
        from . import demo
    except ImportError as exc:
        if getattr(exc, "name", "") == "fxsnn.cli.demo":
            print("fxsnn demo: this installation has no fxsnn.cli.demo module", file=sys.stderr)
            return 1
        raise _InputProblem(f"the demo needs scikit-learn: pip install 'fxsnn[demo]' ({exc})") from None
    result = demo.main(list(args.demo_args))
    return result if isinstance(result, int) else 0


COMMANDS = {
    "convert": _cmd_convert,
    "eval": _cmd_eval,
    "inspect": _cmd_inspect,
    "analyze": _cmd_analyze,
    "demo": _cmd_demo,
}


# -- entry point ------------------------------------------------------------------------
def _startup() -> None:
    """The slow imports (torch: seconds), after the arguments are checked; Ctrl-C here is a plain interrupt."""
    import torch  # noqa: F401

    from ..io import loaders, saving  # noqa: F401


def _pipe_closed() -> int:
    """stdout's reader went away (``| head``): stop quietly, and keep Python's exit-time flush quiet too."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        pass
    return 141


def _failure(exc: Exception, args, prog: str) -> int:
    from ..errors import DataError, FxsnnError
    from ..io.loaders import InputError
    from ..io.saving import SaveFileError

    inputs = (_InputProblem, InputError, SaveFileError, DataError, FileNotFoundError, NotADirectoryError)
    if args.traceback:
        traceback.print_exc()
    if isinstance(exc, inputs + (IsADirectoryError,)):
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    if isinstance(exc, FxsnnError):
        print(f"{prog}: failed: {exc}", file=sys.stderr)
        return 1
    print(
        f"{prog}: unexpected error: {type(exc).__name__}: {exc} (run again with --traceback for details)",
        file=sys.stderr,
    )
    return 1


def main(argv: list[str] | None = None) -> int:
    """Run the ``fxsnn`` command line; returns the exit code (the console script exits with it)."""
    try:
        parser = build_parser()
        args, extra = parser.parse_known_args(argv)
        if args.command == "demo":
            args.demo_args = extra
        elif extra:
            parser.parse_args(argv)  # reports the unrecognised arguments in the subcommand's usage, exits 2
    except KeyboardInterrupt:
        print("fxsnn: interrupted", file=sys.stderr)
        return 130
    prog = f"fxsnn {args.command}"
    try:
        _startup()
        _check_device(args)
        code = int(COMMANDS[args.command](args))
        sys.stdout.flush()
        return code
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return _pipe_closed()
    except Exception as exc:  # noqa: BLE001 - the last line of defence for a shell user
        return _failure(exc, args, prog)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
