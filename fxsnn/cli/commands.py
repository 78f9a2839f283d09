"""The ``fxsnn`` command: convert, eval, inspect, analyze, demo.

Exit codes: 0 success; 1 the run failed (a conversion or calibration error, or
an unexpected error — add ``--traceback`` to see it); 2 bad command line or
input (a model spec that does not import, weights that do not match, a data
file without x/y, a missing file or directory, an unknown layer); 130
interrupted.
"""

from __future__ import annotations

import json
import os
import sys
import traceback

from .parser import build_parser

__all__ = ["main", "COMMANDS"]


class _InputProblem(Exception):
    """Raised inside a command for a user-fixable problem found before any work starts (exit 2)."""


# -- shared steps -----------------------------------------------------------------------
def _check_out(path: str | None, flag: str) -> None:
    if path is None:
        return
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise _InputProblem(
            f"{flag} {path}: directory {parent} does not exist; create it (mkdir -p {parent}) or choose another path"
        )


def _check_device(args) -> None:
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


def _model(args):
    from ..io.loaders import load_model, load_weights, parse_kwargs

    model = load_model(args.model, **parse_kwargs(args.model_arg))
    if args.weights:
        load_weights(model, args.weights)
    elif getattr(args, "command", "") in ("convert", "analyze", "eval"):
        print(f"note: no --weights given; {args.model} keeps its initial (untrained) weights", file=sys.stderr)
    return model.to(args.device).eval()


def _data(args, path: str, *, shuffle: bool = False):
    from torch.utils.data import DataLoader

    from ..io.loaders import OnDevice, load_data

    loader = load_data(
        path,
        batch_size=args.batch_size,
        limit=args.limit,
        nhwc=args.nhwc,
        scale=args.scale,
        mean=args.mean,
        std=args.std,
        image_size=args.image_size,
        random_subset=args.random_subset,
    )
    if shuffle:
        loader = DataLoader(loader.dataset, batch_size=args.batch_size, shuffle=True)
    return OnDevice(loader, args.device)


def _load_snn(path: str, device: str):
    from ..io.saving import load

    return load(path, map_location=device)


# -- commands ---------------------------------------------------------------------------
def _cmd_convert(args) -> int:
    from ..config import METHODS, ConvertConfig
    from ..convert import convert
    from ..io.saving import save
    from ..report.evaluation import evaluate
    from ..report.summarize import summary

    if args.method not in METHODS:
        raise _InputProblem(f"--method {args.method!r}: choose one of {', '.join(METHODS)}")
    try:
        cfg = ConvertConfig.recipe(args.recipe).override(*args.set)
    except (TypeError, ValueError) as exc:
        raise _InputProblem(str(exc)) from None
    if args.T < 1:
        raise _InputProblem(f"--T must be >= 1; got {args.T}")
    _check_out(args.out, "--out")
    model = _model(args)
    data = _data(args, args.data, shuffle=True)
    eval_data = _data(args, args.eval_data) if args.eval_data else None
    snn = convert(model, data, T=args.T, method=args.method, seed=args.seed, config=cfg)
    save(snn, args.out)
    print(summary(snn))
    if eval_data is not None:
        ann_res, snn_res = evaluate(model, eval_data), evaluate(snn, eval_data)
        print(f"ANN: {ann_res}\nSNN: {snn_res}  (T={args.T}, method={args.method})")
    print(f"saved {args.out}")
    return 0


def _cmd_eval(args) -> int:
    from tabulate import tabulate

    from ..modes import get_mode, set_mode, time_steps
    from ..report.evaluation import evaluate

    if not args.snn and not args.model:
        raise _InputProblem("give --snn FILE, --model SPEC, or both")
    snn = _load_snn(args.snn, args.device) if args.snn else None
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
    return 0


def _cmd_inspect(args) -> int:
    from ..io.saving import read_header
    from ..report.summarize import summary

    _check_out(args.csv, "--csv")
    header = read_header(args.path)
    gm = _load_snn(args.path, "cpu")
    keys = ("stage", "T", "mode", "sites", "delta_b_params", "parameters", "fxsnn_version", "torch_version")
    print(f"{args.path}: " + ", ".join(f"{k}={header[k]}" for k in keys if k in header))
    conv = getattr(gm, "meta", {}).get("fxsnn.convert") if hasattr(gm, "meta") else None
    if conv:
        print(f"converted with method={conv.get('method')}, T={conv.get('T')}, seed={conv.get('seed')}")
    s = summary(gm)
    print()
    print(s)
    if args.csv:
        s.to_csv(args.csv)
    if not args.no_graph:
        print()
        print(gm.code.strip() if hasattr(gm, "code") else gm)  # a GraphModule's code, else the module tree
    return 0


def _layer_tokens(text: str | None, names: list[str]):
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


def _cmd_analyze(args) -> int:
    from ..graph.sites import find_sites
    from ..report.analysis import analyze, resolve_layers
    from ..report.energy import EnergyModel

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
    try:
        energy = EnergyModel(e_mac=args.e_mac, e_ac=args.e_ac)
    except ValueError as exc:
        raise _InputProblem(str(exc)) from None
    snn = _load_snn(args.snn, args.device)
    names = [s.name for s in find_sites(snn) if s.kind == "ParallelIF"]
    layers = _layer_tokens(args.layers, names)
    try:
        resolve_layers(layers, names, where="--layers")
    except (TypeError, ValueError) as exc:
        raise _InputProblem(str(exc)) from None
    model = _model(args)
    data = _data(args, args.data)
    from ..errors import ConversionError

    try:
        report = analyze(model, snn, data, layers=layers, energy=energy, mode=args.mode, max_batches=args.batches)
    except ConversionError as exc:  # the ANN given does not match the SNN: an input problem
        raise _InputProblem(str(exc)) from None
    print(report)
    if args.csv:
        report.to_csv(args.csv)
    if args.energy_csv:
        report.to_csv(args.energy_csv, table="energy")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report.to_dict(), fh, indent=2)
    if args.plot or args.plot_layers:
        from ..report.plots import plot_distributions, plot_layers

        if args.plot:
            print(f"wrote {plot_distributions(report, None, args.plot)}")
        if args.plot_layers:
            print(f"wrote {plot_layers(report, args.plot_layers)}")
    return 0


def _cmd_demo(args) -> int:
    try:
        from . import demo
    except ImportError as exc:
        if getattr(exc, "name", "") in ("fxsnn.demo",):
            print("fxsnn demo: this installation has no fxsnn.demo module", file=sys.stderr)
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
def main(argv: list[str] | None = None) -> int:
    """Run the ``fxsnn`` command line; returns the exit code (the console script exits with it)."""
    from ..errors import DataError, FxsnnError
    from ..io.loaders import InputError
    from ..io.saving import SaveFileError

    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command == "demo":
        args.demo_args = extra
    elif extra:
        parser.parse_args(argv)  # reports the unrecognised arguments in the subcommand's usage, exits 2
    prog = f"fxsnn {args.command}"
    cwd = os.getcwd()
    added = cwd not in sys.path
    if added:  # like `python -m`: model specs may name modules in the current directory
        sys.path.insert(0, cwd)
    try:
        _check_device(args)
        return int(COMMANDS[args.command](args))
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except (
        _InputProblem,
        InputError,
        SaveFileError,
        DataError,
        FileNotFoundError,
        NotADirectoryError,
        IsADirectoryError,
    ) as exc:
        if args.traceback:
            traceback.print_exc()
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except FxsnnError as exc:
        if args.traceback:
            traceback.print_exc()
        print(f"{prog}: failed: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - the last line of defence for a shell user
        if args.traceback:
            traceback.print_exc()
        print(
            f"{prog}: unexpected error: {type(exc).__name__}: {exc} (run again with --traceback for details)",
            file=sys.stderr,
        )
        return 1
    finally:
        if added and cwd in sys.path:
            sys.path.remove(cwd)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
