"""The ``captum-inverseset`` command.

::

    captum-inverseset demo --out report/
    captum-inverseset shapley --model PKG.MODULE:FACTORY --layer conv2 ...
    captum-inverseset inverse-set --model PKG.MODULE:FACTORY --layer fc2 ...
    captum-inverseset egbas --generator PKG.MODULE:FACTORY --layer fc1 ...
    captum-inverseset profile --model PKG.MODULE:FACTORY --layer relu3 --neuron 5,:,:
    captum-inverseset maximize --model PKG.MODULE:FACTORY --layer fc2 --neuron 3 ...
    captum-inverseset dissect --model PKG.MODULE:FACTORY --layer relu2 --data d.pt

``--model PKG.MODULE:FACTORY`` imports ``PKG.MODULE`` and calls ``FACTORY()``:
it runs that code with your permissions, as ``torch.hub.load`` does, so only
name code you trust. The working directory is on the import path, so a
``my_models.py`` beside you is found as ``my_models:factory``.

Every user error (an option out of range, a model path that does not import,
a layer name that is not in the model, a weights file that does not load,
data that does not fit the model) ends with one line naming the option and
exit code 2, without a traceback. Errors of the package itself still show a
traceback: they are bugs to report.
"""

import argparse
import json
import sys
from typing import Optional, Sequence

from ._cli_commands import (
    cmd_demo,
    cmd_dissect,
    cmd_egbas,
    cmd_inverse_set,
    cmd_maximize,
    cmd_profile,
    cmd_shapley,
)
from ._cli_support import (
    TRUST_NOTE,
    CLIError,
    ParserWithOneLineErrors,
    band_end,
    nonnegative_float,
    nonnegative_int,
    open_unit_float,
    positive_float,
    positive_int,
)

NEURON_HELP = (
    "neuron of the layer output as a Captum selector: 3, 3,1,1 (channel,y,x), "
    "or with slices summed per example, e.g. 5,:,: (channel 5 over space)"
)

__all__ = ["main", "build_parser", "CLIError"]


# --------------------------------------------------------------------------
# Parser
# --------------------------------------------------------------------------


def _common(p: argparse.ArgumentParser, out_default: str) -> None:
    p.add_argument(
        "--out", default=out_default, help=f"output folder (default: {out_default})"
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="write into a non-empty --out folder, replacing results of the "
        "same name (refused otherwise)",
    )
    p.add_argument(
        "--device",
        default=None,
        help="torch device, e.g. cpu or cuda:0 (default: cuda if available)",
    )
    p.add_argument(
        "--seed", type=nonnegative_int, default=0, help="random seed (default: 0)"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        required=True,
        help="PKG.MODULE:FACTORY returning the model (imports and runs that code)",
    )
    p.add_argument("--weights", help="state dict file (loaded weights-only)")
    p.add_argument(
        "--normalize",
        nargs=2,
        metavar=("MEAN", "STD"),
        help="per-channel normalisation in front of the model, e.g. "
        "0.485,0.456,0.406 0.229,0.224,0.225: data, samples and optimised "
        "inputs stay in the space before it (e.g. [0, 1] images)",
    )
    p.add_argument(
        "--preprocess",
        metavar="PKG.MODULE:FACTORY",
        help="a factory returning an nn.Module applied in front of the model "
        "(imports and runs that code); instead of --normalize",
    )


def _data_options(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--data", default="digits", help=what)
    p.add_argument(
        "--limit", type=positive_int, default=None, help="use the first N inputs"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = ParserWithOneLineErrors(
        prog="captum-inverseset",
        description=(
            "Neuron interpretation for Captum: inverse-set sampling, Neuron "
            "Shapley, E-GBAS, neuron profiles, activation maximisation and "
            "Network Dissection, on the shipped digits models or your own."
        ),
        epilog=TRUST_NOTE,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser(
        "demo",
        help="run all methods on the shipped digits models and write an HTML report",
    )
    _common(p, "report")
    p.add_argument("--quick", action="store_true", help="smaller budgets (a smoke run)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser(
        "shapley",
        help="Neuron Shapley values of a layer's neurons",
        epilog=TRUST_NOTE,
    )
    _model_options(p)
    p.add_argument(
        "--layer",
        required=True,
        nargs="+",
        help="dotted layer name(s); several names make one player set",
    )
    _data_options(p, "'digits' or a .pt file with tensors 'inputs' and 'labels'")
    p.add_argument(
        "--metric",
        default="accuracy",
        choices=["accuracy", "loss", "class_accuracy"],
        help="value of a coalition (default: accuracy)",
    )
    p.add_argument(
        "--class", dest="cls", type=nonnegative_int, help="class for class_accuracy"
    )
    p.add_argument(
        "--n-permutations", type=positive_int, default=50, help="default: 50"
    )
    p.add_argument(
        "--top-k", type=positive_int, default=None, help="bandit top-k (optional)"
    )
    _common(p, "shapley_out")
    p.set_defaults(func=cmd_shapley)

    p = sub.add_parser(
        "inverse-set", help="sample the inverse set of a neuron", epilog=TRUST_NOTE
    )
    _model_options(p)
    p.add_argument("--layer", required=True, help="dotted layer name")
    p.add_argument("--neuron", required=True, help=NEURON_HELP)
    p.add_argument(
        "--range",
        nargs=2,
        type=band_end,
        required=True,
        metavar=("Z1", "Z2"),
        help="activation band z1 < z2 (inf allowed for an open band)",
    )
    p.add_argument(
        "--generator", help="PKG.MODULE:FACTORY of a generator (runs that code)"
    )
    p.add_argument("--generator-weights", help="generator state dict file")
    p.add_argument(
        "--latent-dim",
        type=positive_int,
        help="generator latent size (default: the generator's latent_dim)",
    )
    p.add_argument(
        "--encoder", help="PKG.MODULE:FACTORY of an encoder (runs that code)"
    )
    p.add_argument("--encoder-weights", help="encoder state dict file")
    p.add_argument(
        "--input-shape", help="C,H,W of inputs when no generator (e.g. 1,8,8)"
    )
    p.add_argument("--n-samples", type=positive_int, default=32, help="default: 32")
    p.add_argument("--batch-size", type=positive_int, default=8, help="K (default: 8)")
    _common(p, "inverse_set_out")
    p.set_defaults(func=cmd_inverse_set)

    p = sub.add_parser(
        "egbas", help="E-GBAS samples in a generative region", epilog=TRUST_NOTE
    )
    p.add_argument(
        "--generator",
        required=True,
        help="PKG.MODULE:FACTORY of the generator (imports and runs that code)",
    )
    p.add_argument("--weights", help="state dict file (loaded weights-only)")
    p.add_argument("--layer", required=True, help="dotted name of layer l")
    p.add_argument(
        "--latent-dim", type=positive_int, help="latent size (else .latent_dim)"
    )
    p.add_argument("--n-samples", type=positive_int, default=64, help="default: 64")
    _common(p, "egbas_out")
    p.set_defaults(func=cmd_egbas)

    p = sub.add_parser(
        "profile",
        help="a neuron's dataset profile: histogram, top/bottom examples, class means",
        epilog=TRUST_NOTE,
    )
    _model_options(p)
    p.add_argument("--layer", required=True, help="dotted layer name")
    p.add_argument("--neuron", required=True, help=NEURON_HELP)
    _data_options(
        p, "'digits' or a .pt file with tensor 'inputs' (and 'labels' for class means)"
    )
    p.add_argument("--k", type=positive_int, default=9, help="top/bottom examples")
    p.add_argument("--n-bins", type=positive_int, default=50, help="histogram bins")
    p.add_argument("--batch-size", type=positive_int, default=256, help="default: 256")
    _common(p, "profile_out")
    p.set_defaults(func=cmd_profile)

    p = sub.add_parser(
        "maximize",
        help="activation maximisation: inputs that maximise a neuron",
        epilog=TRUST_NOTE,
    )
    _model_options(p)
    p.add_argument("--layer", required=True, help="dotted layer name")
    p.add_argument("--neuron", required=True, help=NEURON_HELP)
    p.add_argument(
        "--input-shape",
        required=True,
        help="shape of one input: C,H,W optimises a Fourier image, any other "
        "shape a [0, 1] box",
    )
    p.add_argument("--n-inputs", type=positive_int, default=4, help="default: 4")
    p.add_argument("--n-steps", type=positive_int, default=256, help="default: 256")
    p.add_argument("--lr", type=positive_float, default=0.05, help="default: 0.05")
    p.add_argument(
        "--transforms",
        action="store_true",
        help="Lucent's jitter/scale/rotate transforms (the input size is kept)",
    )
    p.add_argument(
        "--tv-weight",
        type=nonnegative_float,
        default=0.0,
        help="total-variation penalty weight (default: 0)",
    )
    p.add_argument("--negative", action="store_true", help="minimise instead")
    _common(p, "maximize_out")
    p.set_defaults(func=cmd_maximize)

    p = sub.add_parser(
        "dissect",
        help="Network Dissection: IoU of a layer's units with concept masks",
        epilog=TRUST_NOTE,
    )
    _model_options(p)
    p.add_argument("--layer", required=True, help="dotted layer name")
    p.add_argument(
        "--data",
        required=True,
        help="a .pt file with tensors 'inputs' and 'masks' (N, K, ...) and "
        "optionally a list 'concept_names'",
    )
    p.add_argument(
        "--limit", type=positive_int, default=None, help="use the first N inputs"
    )
    p.add_argument(
        "--quantile",
        type=open_unit_float,
        default=0.995,
        help="activation threshold quantile in (0, 1) (default: 0.995)",
    )
    p.add_argument("--units", help="comma-separated channels (default: all)")
    p.add_argument("--top", type=positive_int, default=5, help="units per concept")
    p.add_argument("--batch-size", type=positive_int, default=64, help="default: 64")
    _common(p, "dissect_out")
    p.set_defaults(func=cmd_dissect)
    return parser


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        payload = args.func(args)
    except CLIError as exc:
        print(f"captum-inverseset: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    print(json.dumps({k: v for k, v in payload.items() if not isinstance(v, list)}))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
