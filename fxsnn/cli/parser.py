"""The ``fxsnn`` command line's argument parser (commands are dispatched by :mod:`fxsnn.cli.commands`)."""

from __future__ import annotations

import argparse

__all__ = ["build_parser", "METHODS", "RECIPES"]

#: Checked by argparse before torch is imported (equal to fxsnn.config.METHODS / RECIPES; a test keeps them so).
METHODS = ("fspc", "fspc_da", "spatial", "temporal", "full")
RECIPES = ("fxsnn", "paper")

_EPILOG = """exit codes: 0 success; 1 the run failed (add --traceback for details); 2 bad command line or input
(fix the named argument or file); 130 interrupted; 141 the output pipe was closed (e.g. | head)."""


def _add_model(p: argparse.ArgumentParser, *, required: bool) -> None:
    g = p.add_argument_group("model (the ANN)")
    g.add_argument(
        "--model",
        required=required,
        metavar="SPEC",
        help="'package.module:function' (or a class there), or a torchvision model name such as resnet18",
    )
    g.add_argument(
        "--model-arg",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="keyword argument for the model function (repeatable), e.g. --model-arg depth=20",
    )
    g.add_argument("--weights", metavar="FILE", help="state dict file (torch.save(model.state_dict(), FILE))")


def _add_data(p: argparse.ArgumentParser, *, flag: str = "--data", required: bool = True) -> None:
    g = p.add_argument_group("data")
    g.add_argument(
        flag,
        required=required,
        metavar="PATH",
        help="an .npz file with arrays x (inputs) and y (integer labels), or an image folder (DIR/<class>/<image>)",
    )
    g.add_argument("--batch-size", type=int, default=64, help="batch size (default 64)")
    g.add_argument("--limit", type=int, metavar="N", help=f"use only the first N samples of {flag}")
    g.add_argument(
        "--random-subset",
        action="store_true",
        help="with --limit: take N samples by a fixed random permutation (for files sorted by class)",
    )
    # -- input layout, scale and normalisation (issue 9 item 16); they apply to every data file of the command
    layout = g.add_mutually_exclusive_group()
    layout.add_argument(
        "--nhwc",
        action="store_const",
        const=True,
        default=None,
        help=".npz images are [N, H, W, C]: permute to [N, C, H, W] (default: detected from the model's input "
        "channels, else guessed when the last dim is 1, 3 or 4 and dim 1 is not; said when it permutes)",
    )
    layout.add_argument(
        "--nchw", dest="nhwc", action="store_const", const=False, help=".npz images are [N, C, ...]: never permute"
    )
    g.add_argument(
        "--scale",
        type=float,
        help="multiply .npz inputs by this (e.g. 0.00392156 = 1/255; default: uint8 inputs are divided by 255, "
        "others kept; --scale 1 keeps uint8 as 0..255)",
    )
    g.add_argument(
        "--normalize",
        choices=("imagenet", "cifar10", "none"),
        help="subtract/divide a per-channel mean/std preset from pixels in [0, 1]: imagenet (0.485, 0.456, 0.406) / "
        "(0.229, 0.224, 0.225), cifar10 (0.4914, 0.4822, 0.4465) / (0.2470, 0.2435, 0.2616); none: no "
        "normalisation and no warning that the inputs look unnormalised",
    )
    g.add_argument("--mean", type=float, nargs="+", metavar="M", help="per-channel mean to subtract (with --std)")
    g.add_argument("--std", type=float, nargs="+", metavar="S", help="per-channel std to divide by (with --mean)")
    g.add_argument("--image-size", type=int, metavar="PX", help="image folders: resize and centre-crop to PX")
    g.add_argument("--device", default="cpu", help="torch device to run on (default cpu), e.g. cuda")


def build_parser() -> argparse.ArgumentParser:
    """The ``fxsnn`` parser: one subcommand per job, each with ``--help`` and ``--traceback``."""
    from .._version import __version__

    parser = argparse.ArgumentParser(
        prog="fxsnn",
        description="Turn a trained PyTorch ReLU network into a parallel spiking neural network.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"fxsnn {__version__}")
    parser.add_argument("--traceback", action="store_true", help="show the full traceback when a command fails")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in (_add_convert, _add_eval, _add_inspect, _add_analyze, _add_demo):
        add(sub)
    for name, sp in sub.choices.items():
        if name != "demo":
            sp.add_argument(
                "--traceback",
                action="store_true",
                default=argparse.SUPPRESS,
                help="show the full traceback when the command fails",
            )
    return parser


_Subparsers = argparse._SubParsersAction


def _add_convert(sub: _Subparsers) -> None:
    p = sub.add_parser(
        "convert",
        help="convert an ANN into a parallel SNN and save it",
        epilog=_EPILOG,
        description="Convert a trained ReLU network with fxsnn.convert and save the SNN (fxsnn.save).",
    )
    _add_model(p, required=True)
    _add_data(p)
    g = p.add_argument_group("conversion")
    g.add_argument("--T", type=int, default=4, help="time steps (default 4)")
    g.add_argument("--method", default="full", choices=METHODS, help="%(choices)s (default full)")
    g.add_argument("--recipe", default="fxsnn", choices=RECIPES, help="base settings: fxsnn (default) or paper")
    g.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a field of the recipe by its dotted key (repeatable), e.g. --set stage1.epochs=1 "
        "--set stage2.train.lr=0.01 --set theta_percentile=None; values are Python literals, strings may be bare; "
        "an unknown key lists the valid ones",
    )
    g.add_argument(
        "--leaf-module",
        action="append",
        default=[],
        metavar="NAME",
        help="qualified name of a submodule to keep opaque when tracing (repeatable), e.g. --leaf-module layer1.0; "
        "the fix a trace error suggests (its ReLUs stay unconverted)",
    )
    g.add_argument(
        "--concrete-arg",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="specialise a non-tensor forward argument when tracing (repeatable), e.g. --concrete-arg "
        "return_features=False; values are Python literals",
    )
    g.add_argument(
        "--allow-analog",
        action="store_true",
        help="convert a network with nonlinear ops other than ReLUs (GELU, SiLU, Sigmoid, Hardswish, Softmax, "
        "LeakyReLU, an opaque leaf module, ...) as a hybrid in which they stay analog; without it such a network "
        "is refused with the list of those ops",
    )
    g.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    g.add_argument("--out", required=True, metavar="FILE", help="where to save the SNN (e.g. snn.fxsnn)")
    g.add_argument(
        "--eval-data",
        metavar="PATH",
        help="also report ANN and SNN accuracy on this data (read like --data; --limit does not apply to it)",
    )
    g.add_argument("--eval-limit", type=int, metavar="N", help="use only the first N samples of --eval-data")
    g.add_argument(
        "--eval-random-subset",
        action="store_true",
        help="with --eval-limit: take N samples by a fixed random permutation (for files sorted by class)",
    )
    g.add_argument(
        "--timeout",
        type=float,
        default=1800.0,
        metavar="SECONDS",
        help="under torchrun --nproc_per_node N: the process group's timeout, after which the other ranks stop "
        "when one hangs (default 1800); each rank reads its shard of --data (--batch-size per rank) and rank 0 "
        "alone prints and writes --out",
    )


def _add_eval(sub: _Subparsers) -> None:
    p = sub.add_parser(
        "eval",
        help="accuracy of a saved SNN and/or an ANN",
        epilog=_EPILOG,
        description="Top-1 accuracy and loss of a saved SNN (--snn) and/or an ANN (--model).",
    )
    p.add_argument(
        "--snn", metavar="FILE", help="a network saved by fxsnn convert / fxsnn.save (give --model: its ANN)"
    )
    p.add_argument("--mode", choices=("spike", "rate"), help="run the SNN in this mode (default: as saved)")
    _add_model(p, required=False)  # required with --snn: the ANN the SNN is rebuilt from
    _add_data(p)


def _add_inspect(sub: _Subparsers) -> None:
    p = sub.add_parser(
        "inspect",
        help="per-site summary and graph of a saved network",
        epilog=_EPILOG,
        description="Print the header, the recorded summary and graph code of a saved network (reads its JSON "
        "record only: nothing is rebuilt, imported or run).",
    )
    p.add_argument("path", metavar="PATH", help="a file written by fxsnn convert / fxsnn.save")
    p.add_argument("--no-graph", action="store_true", help="do not print the graph code")
    p.add_argument("--csv", metavar="FILE", help="also write the summary table as CSV")


def _add_analyze(sub: _Subparsers) -> None:
    p = sub.add_parser(
        "analyze",
        help="ANN vs SNN per layer, SOPs, energy, plots",
        epilog=_EPILOG,
        description="Compare an ANN with its saved SNN site by site (fxsnn.analyze); optional plots.",
    )
    p.add_argument("--snn", required=True, metavar="FILE", help="a network saved by fxsnn convert / fxsnn.save")
    _add_model(p, required=True)
    _add_data(p)
    g = p.add_argument_group("analysis")
    g.add_argument("--layers", metavar="A,B,...", help="sites to compare (names or indices; default all)")
    g.add_argument("--batches", type=int, metavar="N", help="use at most N batches")
    g.add_argument("--mode", choices=("spike", "rate"), help="run the SNN in this mode (default: as saved)")
    g.add_argument(
        "--serial",
        action="store_true",
        help="also run the serial IF network (fxsnn.passes.to_serial: same weights and thresholds, one time step "
        "at a time, as serial neuromorphic hardware would) and report its gap to the parallel SNN: max |logit "
        "difference|, prediction agreement and, with labels, its top-1. Expensive: T forward passes per batch, "
        "about one more spike-mode run",
    )
    g.add_argument("--e-mac", type=float, default=4.6, help="energy per MAC in pJ (default 4.6)")
    g.add_argument("--e-ac", type=float, default=0.9, help="energy per AC in pJ (default 0.9)")
    g.add_argument("--plot", metavar="FILE.png", help="write ANN vs SNN histograms of the chosen sites")
    g.add_argument("--plot-layers", metavar="FILE.png", help="write per-site firing rates and per-layer SOPs")
    g.add_argument("--csv", metavar="FILE", help="write the per-site table as CSV")
    g.add_argument("--energy-csv", metavar="FILE", help="write the per-layer energy table as CSV")
    g.add_argument("--json", metavar="FILE", help="write the whole report as JSON")


def _add_demo(sub: _Subparsers) -> None:
    sub.add_parser(
        "demo",
        help="self-contained demo: digits, a small CNN, conversion at T = 2 and 4",
        add_help=False,
        description="Runs fxsnn.demo; every argument after 'demo' goes to it.",
    )
