"""The ``captum-inverseset`` command.

::

    captum-inverseset demo --out report/
    captum-inverseset shapley --model PKG.MODULE:FACTORY --layer conv2 ...
    captum-inverseset inverse-set --model PKG.MODULE:FACTORY --layer fc2 ...
    captum-inverseset egbas --generator PKG.MODULE:FACTORY --layer fc1 ...

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

from ._cli_commands import cmd_demo, cmd_egbas, cmd_inverse_set, cmd_shapley
from ._cli_support import (
    TRUST_NOTE,
    CLIError,
    ParserWithOneLineErrors,
    band_end,
    nonnegative_int,
    positive_int,
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


def build_parser() -> argparse.ArgumentParser:
    parser = ParserWithOneLineErrors(
        prog="captum-inverseset",
        description=(
            "Neuron interpretation for Captum: inverse-set sampling, Neuron "
            "Shapley and E-GBAS, on the shipped digits models or your own."
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
    p.add_argument(
        "--data",
        default="digits",
        help="'digits' or a .pt file with tensors 'inputs' and 'labels'",
    )
    p.add_argument(
        "--limit", type=positive_int, default=None, help="use the first N inputs"
    )
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
    p.add_argument(
        "--neuron", required=True, help="neuron index, e.g. 3 or 3,1,1 (channel,y,x)"
    )
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
