"""The ``captum-inverseset`` command.

::

    captum-inverseset demo --out report/
    captum-inverseset shapley --model PKG.MODULE:FACTORY --layer conv2 ...
    captum-inverseset inverse-set --model PKG.MODULE:FACTORY --layer fc2 ...
    captum-inverseset egbas --generator PKG.MODULE:FACTORY --layer fc1 ...

Mistakes in the arguments (a model path that does not import, a layer name
that is not in the model, a weights file that does not load) end with a
one-line message and exit code 2, without a traceback.
"""

import argparse
import importlib
import json
import os
import sys
from typing import Any, Callable, Optional, Sequence

import torch
from torch import nn

__all__ = ["main", "build_parser", "CLIError"]


class CLIError(Exception):
    """A user error: reported as one line, exit code 2."""


# --------------------------------------------------------------------------
# Loading models, weights, layers and data
# --------------------------------------------------------------------------


def load_factory(spec: str, what: str = "--model") -> Callable[..., Any]:
    """``"package.module:factory"`` -> the callable."""
    if ":" not in spec:
        raise CLIError(f"{what} must look like package.module:factory, got {spec!r}")
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # ImportError and errors raised while importing
        raise CLIError(f"{what}: cannot import module {module_name!r}: {exc}") from None
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise CLIError(f"{what}: module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise CLIError(f"{what}: {spec!r} is not callable")
    return obj


def build_model(
    spec: str, weights: Optional[str], device: torch.device, what: str = "--model"
) -> nn.Module:
    factory = load_factory(spec, what)
    try:
        model = factory()
    except Exception as exc:
        raise CLIError(f"{what}: calling {spec!r} failed: {exc}") from None
    if not isinstance(model, nn.Module):
        raise CLIError(
            f"{what}: {spec!r} returned {type(model).__name__}, not a Module"
        )
    if weights is not None:
        load_state(model, weights)
    return model.to(device).eval()


def load_state(model: nn.Module, path: str) -> None:
    """Load a state dict without unpickling code (``weights_only=True``)."""
    if not os.path.isfile(path):
        raise CLIError(f"--weights: no such file {path!r}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise CLIError(
            f"--weights: {path!r} is not a plain tensor checkpoint ({first})"
        ) from None
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise CLIError(f"--weights: {path!r} does not hold a state dict")
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise CLIError(f"--weights: does not fit the model: {first}") from None


def resolve_layer(model: nn.Module, name: str) -> nn.Module:
    """Dotted layer name (``layer1.0.conv1``) -> module, as Captum/TCAV use them."""
    modules = dict(model.named_modules())
    if name not in modules or name == "":
        close = [n for n in modules if n and name.split(".")[-1] in n][:5]
        hint = f" (similar: {', '.join(close)})" if close else ""
        raise CLIError(f"--layer: model has no layer named {name!r}{hint}")
    return modules[name]


def load_data(spec: str, device: torch.device):
    """``digits`` (the shipped test split) or a ``.pt`` file with tensors
    ``inputs`` and ``labels`` saved by ``torch.save`` (loaded weights-only)."""
    if spec == "digits":
        from .zoo import load_digits_dataset

        data = load_digits_dataset()
        return data.test_inputs.to(device), data.test_labels.to(device)
    if not os.path.isfile(spec):
        raise CLIError(f"--data: expected 'digits' or a .pt file, got {spec!r}")
    try:
        obj = torch.load(spec, map_location="cpu", weights_only=True)
    except Exception:
        raise CLIError(f"--data: {spec!r} is not a plain tensor file") from None
    if not isinstance(obj, dict) or "inputs" not in obj:
        raise CLIError("--data: the file must hold a dict with 'inputs' (and 'labels')")
    labels = obj.get("labels")
    return obj["inputs"].to(device), None if labels is None else labels.to(device)


def parse_device(name: Optional[str]) -> torch.device:
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise CLIError(f"--device: unknown device {name!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CLIError("--device: CUDA is not available on this machine")
    return device


def parse_shape(text: str) -> tuple:
    try:
        shape = tuple(int(s) for s in text.split(","))
    except ValueError:
        raise CLIError(f"shape must be comma-separated ints, got {text!r}") from None
    if not shape or min(shape) < 1:
        raise CLIError(f"shape must be positive, got {text!r}")
    return shape


def parse_selector(text: str):
    """``3`` -> 3, ``3,1,1`` -> (3, 1, 1) (Captum neuron selectors)."""
    try:
        parts = [int(s) for s in text.split(",")]
    except ValueError:
        raise CLIError(
            f"--neuron must be ints separated by commas, got {text!r}"
        ) from None
    return parts[0] if len(parts) == 1 else tuple(parts)


def _write_json(path: str, payload: dict) -> None:
    with open(path, "w") as fh:
        json.dump(payload, fh, indent=2, default=float)


def _write_outputs(result, out_dir: str, name: str, payload: dict) -> dict:
    """Write ``name.png`` (the result's plot), ``name.pt`` (the result, when
    it can save itself) and ``name.json`` (``payload`` + the PNG path)."""
    import matplotlib.pyplot as plt

    os.makedirs(out_dir, exist_ok=True)
    fig = result.plot()
    fig = fig[0] if isinstance(fig, tuple) else fig
    png = os.path.join(out_dir, f"{name}.png")
    fig.savefig(png, dpi=110, bbox_inches="tight")
    plt.close(fig)
    if hasattr(result, "save"):
        result.save(os.path.join(out_dir, f"{name}.pt"))
    payload = {**payload, "png": png}
    _write_json(os.path.join(out_dir, f"{name}.json"), payload)
    return payload


# --------------------------------------------------------------------------
# Sub-commands
# --------------------------------------------------------------------------


def cmd_shapley(args) -> dict:
    from . import NeuronShapley

    device = parse_device(args.device)
    model = build_model(args.model, args.weights, device)
    layers = [resolve_layer(model, name) for name in args.layer]
    inputs, labels = load_data(args.data, device)
    if args.limit:
        inputs = inputs[: args.limit]
        labels = None if labels is None else labels[: args.limit]
    if labels is None and args.metric in ("accuracy", "loss", "class_accuracy"):
        raise CLIError(f"--metric {args.metric} needs labels in --data")
    kwargs = {}
    if args.metric == "class_accuracy":
        if args.cls is None:
            raise CLIError("--metric class_accuracy needs --class")
        kwargs["metric_class"] = args.cls
    ns = NeuronShapley(model, layers if len(layers) > 1 else layers[0])
    values = ns.attribute(
        inputs,
        target=labels,
        metric=args.metric,
        n_permutations=args.n_permutations,
        top_k=args.top_k,
        seed=args.seed,
        show_progress=not args.quiet,
        **kwargs,
    )
    values = values if isinstance(values, tuple) else (values,)
    payload = {
        "layers": args.layer,
        "metric": args.metric,
        "values": [v.detach().cpu().flatten().tolist() for v in values],
    }
    return _write_outputs(ns.last_result, args.out, "shapley", payload)


def cmd_inverse_set(args) -> dict:
    from . import NeuronInverseSet

    device = parse_device(args.device)
    model = build_model(args.model, args.weights, device)
    layer = resolve_layer(model, args.layer)
    generator = encoder = None
    if args.generator:
        generator = build_model(
            args.generator, args.generator_weights, device, "--generator"
        )
    if args.encoder:
        encoder = build_model(args.encoder, args.encoder_weights, device, "--encoder")
    input_shape = parse_shape(args.input_shape) if args.input_shape else None
    if generator is None and input_shape is None:
        raise CLIError("--input-shape is required when no --generator is given")
    low, high = args.range
    sampler = NeuronInverseSet(model, layer, generator=generator, encoder=encoder)
    kwargs = {}
    if generator is not None and args.latent_dim:
        kwargs["latent_shape"] = (args.latent_dim,)
    result = sampler.sample(
        parse_selector(args.neuron),
        activation_range=(low, high),
        n_samples=args.n_samples,
        batch_size=args.batch_size,
        input_shape=input_shape,
        seed=args.seed,
        show_progress=not args.quiet,
        **kwargs,
    )
    payload = {
        "layer": args.layer,
        "neuron": args.neuron,
        "activation_range": [low, high],
        "n_samples": int(result.inputs.shape[0]),
        "feasible_fraction": float(result.feasible.float().mean()),
    }
    return _write_outputs(result, args.out, "inverse_set", payload)


def cmd_egbas(args) -> dict:
    from . import EGBAS

    device = parse_device(args.device)
    generator = build_model(args.generator, args.weights, device, "--generator")
    layer = resolve_layer(generator, args.layer)
    gen = torch.Generator().manual_seed(args.seed)
    latent_dim = args.latent_dim or getattr(generator, "latent_dim", None)
    if latent_dim is None:
        raise CLIError("--latent-dim is required for this generator")
    z0 = torch.randn(1, latent_dim, generator=gen).to(device)
    egbas = EGBAS(generator, layer)
    result = egbas.sample(
        z0, n_samples=args.n_samples, seed=args.seed, show_progress=not args.quiet
    )
    payload = {
        "layer": args.layer,
        "n_samples": int(result.latents.shape[0]),
        "mask_size": int(result.mask.sum()),
        "in_region_fraction": float(result.in_region.float().mean()),
    }
    return _write_outputs(result, args.out, "egbas", payload)


def cmd_demo(args) -> dict:
    from .demo import run_demo

    return run_demo(
        args.out,
        device=parse_device(args.device),
        seed=args.seed,
        quick=args.quick,
        show_progress=not args.quiet,
    )


# --------------------------------------------------------------------------
# Parser
# --------------------------------------------------------------------------


def _common(p: argparse.ArgumentParser, out_default: str) -> None:
    p.add_argument(
        "--out", default=out_default, help=f"output folder (default: {out_default})"
    )
    p.add_argument(
        "--device",
        default=None,
        help="torch device, e.g. cpu or cuda:0 (default: cuda if available)",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="captum-inverseset",
        description=(
            "Neuron interpretation for Captum: inverse-set sampling, Neuron "
            "Shapley and E-GBAS, on the shipped digits models or your own."
        ),
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

    p = sub.add_parser("shapley", help="Neuron Shapley values of a layer's neurons")
    p.add_argument("--model", required=True, help="package.module:factory")
    p.add_argument("--weights", help="state dict file (loaded weights-only)")
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
    p.add_argument("--limit", type=int, default=0, help="use the first N inputs")
    p.add_argument(
        "--metric",
        default="accuracy",
        choices=["accuracy", "loss", "class_accuracy"],
        help="value of a coalition (default: accuracy)",
    )
    p.add_argument("--class", dest="cls", type=int, help="class for class_accuracy")
    p.add_argument("--n-permutations", type=int, default=50, help="default: 50")
    p.add_argument("--top-k", type=int, default=None, help="bandit top-k (optional)")
    _common(p, "shapley_out")
    p.set_defaults(func=cmd_shapley)

    p = sub.add_parser("inverse-set", help="sample the inverse set of a neuron")
    p.add_argument("--model", required=True, help="package.module:factory")
    p.add_argument("--weights", help="state dict file (loaded weights-only)")
    p.add_argument("--layer", required=True, help="dotted layer name")
    p.add_argument(
        "--neuron", required=True, help="neuron index, e.g. 3 or 3,1,1 (channel,y,x)"
    )
    p.add_argument(
        "--range",
        nargs=2,
        type=float,
        required=True,
        metavar=("Z1", "Z2"),
        help="activation band z1 z2",
    )
    p.add_argument("--generator", help="package.module:factory of a generator")
    p.add_argument("--generator-weights", help="generator state dict file")
    p.add_argument("--latent-dim", type=int, help="generator latent size")
    p.add_argument("--encoder", help="package.module:factory of an encoder")
    p.add_argument("--encoder-weights", help="encoder state dict file")
    p.add_argument(
        "--input-shape", help="C,H,W of inputs when no generator (e.g. 1,8,8)"
    )
    p.add_argument("--n-samples", type=int, default=32, help="default: 32")
    p.add_argument("--batch-size", type=int, default=8, help="K (default: 8)")
    _common(p, "inverse_set_out")
    p.set_defaults(func=cmd_inverse_set)

    p = sub.add_parser("egbas", help="E-GBAS samples in a generative region")
    p.add_argument("--generator", required=True, help="package.module:factory")
    p.add_argument("--weights", help="state dict file (loaded weights-only)")
    p.add_argument("--layer", required=True, help="dotted name of layer l")
    p.add_argument("--latent-dim", type=int, help="latent size (else .latent_dim)")
    p.add_argument("--n-samples", type=int, default=64, help="default: 64")
    _common(p, "egbas_out")
    p.set_defaults(func=cmd_egbas)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        payload = args.func(args)
    except CLIError as exc:
        print(f"captum-inverseset: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({k: v for k, v in payload.items() if not isinstance(v, list)}))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
