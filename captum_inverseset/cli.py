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
import importlib
import json
import math
import os
import re
import sys
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterator, Optional, Sequence

import torch
from torch import nn

__all__ = ["main", "build_parser", "CLIError"]

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))

TRUST_NOTE = (
    "PKG.MODULE:FACTORY imports PKG.MODULE and calls FACTORY(): this runs that "
    "code with your permissions (as torch.hub does), so only name code you "
    "trust. The working directory is on the import path."
)


class CLIError(Exception):
    """A user error: reported as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad command line as a :class:`CLIError` (one
    line, exit code 2) instead of printing the usage block."""

    def error(self, message: str):  # type: ignore[override]
        raise CLIError(f"{message} (see {self.prog} --help)")


# --------------------------------------------------------------------------
# Option types (argparse calls them; their errors name the option)
# --------------------------------------------------------------------------


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be a positive integer, got {text!r}"
        ) from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def nonnegative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be a non-negative integer, got {text!r}"
        ) from None
    if value < 0:
        raise argparse.ArgumentTypeError(
            f"must be a non-negative integer, got {text!r}"
        )
    return value


def band_end(text: str) -> float:
    """A float that may be infinite (an open band) but not NaN."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if math.isnan(value):
        raise argparse.ArgumentTypeError("must be a number, got nan")
    return value


# --------------------------------------------------------------------------
# Loading models, weights, layers and data
# --------------------------------------------------------------------------


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def load_factory(spec: str, what: str = "--model") -> Callable[..., Any]:
    """``"package.module:factory"`` -> the callable (imports user code)."""
    if ":" not in spec:
        raise CLIError(f"{what} must look like package.module:factory, got {spec!r}")
    module_name, _, attr = spec.partition(":")
    # A console script does not put the working directory on sys.path (python
    # -m does); user factories usually live there.
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # ImportError and errors raised while importing
        raise CLIError(
            f"{what}: cannot import module {module_name!r}: {_first_line(exc)}"
        ) from None
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise CLIError(f"{what}: module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise CLIError(f"{what}: {spec!r} is not callable")
    return obj


def build_model(
    spec: str,
    weights: Optional[str],
    device: torch.device,
    what: str = "--model",
    weights_option: str = "--weights",
) -> nn.Module:
    factory = load_factory(spec, what)
    try:
        model = factory()
    except Exception as exc:
        raise CLIError(f"{what}: calling {spec!r} failed: {_first_line(exc)}") from None
    if not isinstance(model, nn.Module):
        raise CLIError(
            f"{what}: {spec!r} returned {type(model).__name__}, not a Module"
        )
    if weights is not None:
        load_state(model, weights, weights_option)
    return model.to(device).eval()


def load_state(model: nn.Module, path: str, what: str = "--weights") -> None:
    """Load a state dict without unpickling code (``weights_only=True``)."""
    if not os.path.isfile(path):
        raise CLIError(f"{what}: no such file {path!r}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CLIError(
            f"{what}: {path!r} is not a plain tensor checkpoint ({_first_line(exc)})"
        ) from None
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise CLIError(f"{what}: {path!r} does not hold a state dict")
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, KeyError) as exc:
        raise CLIError(f"{what}: does not fit the model: {_first_line(exc)}") from None


def resolve_layer(model: nn.Module, name: str, what: str = "--layer") -> nn.Module:
    """Dotted layer name (``layer1.0.conv1``) -> module, as Captum/TCAV use them."""
    modules = dict(model.named_modules())
    if name not in modules or name == "":
        close = [n for n in modules if n and name.split(".")[-1] in n][:5]
        hint = f" (similar: {', '.join(close)})" if close else ""
        raise CLIError(f"{what}: model has no layer named {name!r}{hint}")
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
    inputs, labels = obj["inputs"], obj.get("labels")
    if not torch.is_tensor(inputs):
        raise CLIError(
            f"--data: 'inputs' must be one tensor (N, ...), got {type(inputs).__name__}"
        )
    if inputs.dim() == 0 or inputs.shape[0] == 0:
        raise CLIError(
            f"--data: 'inputs' holds no examples (shape {tuple(inputs.shape)})"
        )
    from ._utils.data import format_target
    from ._utils.validation import check_finite_inputs

    with _as_option("--data"):
        check_finite_inputs("inputs", inputs)
        if labels is not None:
            labels = format_target(labels, inputs.shape[0], name="labels")
    return inputs.to(device), None if labels is None else labels.to(device)


def parse_device(name: Optional[str]) -> torch.device:
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise CLIError(f"--device: unknown device {name!r}") from None
    if device.type == "meta":
        raise CLIError("--device: the meta device holds no values; use cpu or cuda")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise CLIError("--device: CUDA is not available on this machine")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise CLIError(
                f"--device: no {name} (this machine has "
                f"{torch.cuda.device_count()} CUDA device(s))"
            )
    try:
        torch.empty(1, device=device)
    except (RuntimeError, AssertionError) as exc:
        raise CLIError(f"--device: cannot use {name!r}: {_first_line(exc)}") from None
    return device


def parse_shape(text: str, what: str = "--input-shape") -> tuple:
    try:
        shape = tuple(int(s) for s in text.split(","))
    except ValueError:
        raise CLIError(f"{what} must be comma-separated ints, got {text!r}") from None
    if not shape or min(shape) < 1:
        raise CLIError(f"{what} must be positive, got {text!r}")
    return shape


def parse_selector(text: str):
    """``3`` -> 3, ``3,1,1`` -> (3, 1, 1) (Captum neuron selectors)."""
    try:
        parts = [int(s) for s in text.split(",")]
    except ValueError:
        raise CLIError(
            f"--neuron must be ints separated by commas, got {text!r}"
        ) from None
    if any(p < 0 for p in parts):
        raise CLIError(f"--neuron indices must be non-negative, got {text!r}")
    return parts[0] if len(parts) == 1 else tuple(parts)


def prepare_out(path: str, overwrite: bool) -> str:
    """Refuse a file, or a folder holding earlier results unless
    ``--overwrite``; create the folder."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise CLIError(f"--out: {path!r} is a file, not a folder")
    if os.path.isdir(path) and os.listdir(path) and not overwrite:
        raise CLIError(
            f"--out: folder {path!r} is not empty; pass --overwrite to replace "
            "the results in it"
        )
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise CLIError(f"--out: cannot create {path!r}: {_first_line(exc)}") from None
    return path


# --------------------------------------------------------------------------
# User errors from the library and from running the user's model
# --------------------------------------------------------------------------


def _raised_in_package(exc: BaseException) -> bool:
    """Whether the innermost frame of ``exc``'s traceback is this package's
    own code (argument validation), not the user's model or torch."""
    tb = exc.__traceback__
    last = None
    while tb is not None:
        last = tb
        tb = tb.tb_next
    if last is None:
        return False
    filename = os.path.abspath(last.tb_frame.f_code.co_filename)
    return filename.startswith(_PACKAGE_DIR + os.sep)


@contextmanager
def _library_arguments(options: Dict[str, str]) -> Iterator[None]:
    """Turn the library's argument errors into a :class:`CLIError` naming the
    option. ``options`` maps a library argument name (how its ``ValueError``
    or ``TypeError`` message starts) to the option that set it. Any other
    exception, and a ``ValueError`` raised outside the package's own code,
    propagates with its traceback."""
    try:
        yield
    except (ValueError, TypeError) as exc:
        match = re.match(r"[A-Za-z_][A-Za-z0-9_]*", str(exc))
        name = match.group(0) if match else None
        if name not in options or not _raised_in_package(exc):
            raise
        raise CLIError(f"{options[name]}: {_first_line(exc)}") from None


@contextmanager
def _as_option(option: str) -> Iterator[None]:
    """Every ``ValueError`` of the block is about ``option``."""
    try:
        yield
    except ValueError as exc:
        raise CLIError(f"{option}: {_first_line(exc)}") from None


# Errors a model raises on inputs of the wrong shape, dtype or device.
_MISMATCH = (RuntimeError, ValueError, TypeError, IndexError)


def probe_model(model: Callable, inputs: torch.Tensor, option: str, what: str):
    """Run ``model`` once on two examples; an error there is a mismatch of the
    user's model and data, reported as one line naming ``option``."""
    try:
        with torch.no_grad():
            return model(inputs[:2])
    except _MISMATCH as exc:
        raise CLIError(
            f"{option}: {what} cannot run on inputs of shape "
            f"{tuple(inputs.shape[1:])} per example: {type(exc).__name__}: "
            f"{_first_line(exc)}"
        ) from None


def probe_layer(
    model: Callable, layer: nn.Module, inputs: torch.Tensor, option: str
) -> torch.Tensor:
    """The output of ``layer`` on two examples (after :func:`probe_model`)."""
    from ._utils.layer_eval import LayerNotCalledError, layer_eval

    try:
        (out,) = layer_eval(model, inputs[:2], layer)
    except LayerNotCalledError:
        raise CLIError(
            f"{option}: the layer does not run in the model's forward"
        ) from None
    except ValueError as exc:  # a layer whose output is not one tensor
        raise CLIError(f"{option}: {_first_line(exc)}") from None
    return out


def check_selector(selector: Any, layer_output: torch.Tensor) -> None:
    """``--neuron`` must index one unit of the layer output (batch dim aside)."""
    index = selector if isinstance(selector, tuple) else (selector,)
    unit_shape = tuple(layer_output.shape[1:])
    if len(index) != len(unit_shape):
        raise CLIError(
            f"--neuron: the layer output has unit shape {unit_shape}, so give "
            f"{len(unit_shape)} index(es), got {len(index)}"
        )
    for i, size in zip(index, unit_shape):
        if isinstance(i, int) and not 0 <= i < size:
            raise CLIError(
                f"--neuron: index {i} out of range for the layer's unit shape "
                f"{unit_shape}"
            )


def check_labels(labels: Optional[torch.Tensor], logits: Any) -> int:
    """Labels must index the model's outputs; returns the number of classes."""
    if not torch.is_tensor(logits) or logits.dim() != 2:
        shape = tuple(logits.shape) if torch.is_tensor(logits) else type(logits)
        raise CLIError(
            f"--model: needs a classifier returning (N, classes) logits, got {shape}"
        )
    n_classes = logits.shape[1]
    if labels is not None and labels.numel() and int(labels.max()) >= n_classes:
        raise CLIError(
            f"--data: labels has class index {int(labels.max())}, but the model "
            f"has {n_classes} outputs (valid: 0 to {n_classes - 1})"
        )
    return n_classes


# --------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------


def _write_json(path: str, payload: dict) -> None:
    with open(path, "w") as fh:
        json.dump(payload, fh, indent=2, default=float)


def _write_outputs(result, out_dir: str, name: str, payload: dict) -> dict:
    """Write ``name.png`` (the result's plot), ``name.pt`` (the result, when
    it can save itself) and ``name.json`` (``payload`` + the PNG path)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
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


def _shapley_result(ns, inputs, **kwargs):
    """Neuron Shapley's result object: ``interpret()`` where the class has it,
    else ``attribute(..., return_stats=True)`` (the verb before issue 17)."""
    if hasattr(ns, "interpret"):
        return ns.interpret(inputs, **kwargs)
    out = ns.attribute(inputs, return_stats=True, **kwargs)
    return out[-1]


def _limit(inputs, labels, limit: Optional[int]):
    if limit is None:
        return inputs, labels
    return inputs[:limit], None if labels is None else labels[:limit]


# --------------------------------------------------------------------------
# Sub-commands
# --------------------------------------------------------------------------


def cmd_shapley(args) -> dict:
    from . import NeuronShapley

    device = parse_device(args.device)
    prepare_out(args.out, args.overwrite)
    model = build_model(args.model, args.weights, device)
    layers = [resolve_layer(model, name) for name in args.layer]
    inputs, labels = _limit(*load_data(args.data, device), args.limit)
    logits = probe_model(model, inputs, "--data", "the model")
    n_classes = check_labels(labels, logits)
    if labels is None and args.metric in ("accuracy", "loss", "class_accuracy"):
        raise CLIError(f"--metric {args.metric} needs labels in --data")
    kwargs: Dict[str, Any] = {}
    if args.metric == "class_accuracy":
        if args.cls is None:
            raise CLIError("--metric class_accuracy needs --class")
        if args.cls >= n_classes:
            raise CLIError(
                f"--class: {args.cls} out of range, the model has {n_classes} "
                f"outputs (valid: 0 to {n_classes - 1})"
            )
        kwargs["metric_class"] = args.cls
    n_players = 0
    for name, layer in zip(args.layer, layers):
        out = probe_layer(model, layer, inputs, "--layer")
        if out.dim() < 2:
            raise CLIError(f"--layer: {name} has no unit dimension")
        n_players += out.shape[1]
    if args.top_k is not None and args.top_k >= n_players:
        raise CLIError(
            f"--top-k: must be smaller than the number of neurons ({n_players})"
        )
    ns = NeuronShapley(model, layers if len(layers) > 1 else layers[0])
    options = {
        "n_permutations": "--n-permutations",
        "top_k": "--top-k",
        "metric_class": "--class",
        "metric": "--metric",
        "target": "--data",
        "inputs": "--data",
        "seed": "--seed",
    }
    with _library_arguments(options):
        result = _shapley_result(
            ns,
            inputs,
            target=labels,
            metric=args.metric,
            n_permutations=args.n_permutations,
            top_k=args.top_k,
            seed=args.seed,
            show_progress=not args.quiet,
            **kwargs,
        )
    per_layer = result.values_per_layer()
    payload = {
        "layers": args.layer,
        "metric": args.metric,
        "values": [v.detach().cpu().flatten().tolist() for v in per_layer],
    }
    return _write_outputs(result, args.out, "shapley", payload)


def _generator_parameterization(generator: nn.Module, latent_dim: Optional[int]):
    """The generator as the sampler takes it: with ``--latent-dim``, wrapped
    with that latent shape (else the generator's own ``latent_dim``)."""
    if latent_dim is None:
        return generator
    from .param import GeneratorParameterization

    return GeneratorParameterization(generator, (latent_dim,))


def _latent_size(generator: nn.Module, latent_dim: Optional[int]) -> int:
    size = latent_dim or getattr(generator, "latent_dim", None)
    if size is None:
        code_shape = getattr(generator, "code_shape", None)
        if code_shape is not None and len(code_shape) == 1:
            size = int(code_shape[0])
    if size is None:
        raise CLIError("--latent-dim is required for this generator")
    return int(size)


def cmd_inverse_set(args) -> dict:
    from . import NeuronInverseSet

    device = parse_device(args.device)
    prepare_out(args.out, args.overwrite)
    model = build_model(args.model, args.weights, device)
    layer = resolve_layer(model, args.layer)
    generator = encoder = None
    if args.generator:
        generator = build_model(
            args.generator,
            args.generator_weights,
            device,
            "--generator",
            "--generator-weights",
        )
    elif args.generator_weights or args.latent_dim:
        flag = "--generator-weights" if args.generator_weights else "--latent-dim"
        raise CLIError(f"{flag} needs --generator")
    if args.encoder:
        encoder = build_model(
            args.encoder, args.encoder_weights, device, "--encoder", "--encoder-weights"
        )
    elif args.encoder_weights:
        raise CLIError("--encoder-weights needs --encoder")
    input_shape = parse_shape(args.input_shape) if args.input_shape else None
    if generator is None and input_shape is None:
        raise CLIError("--input-shape is required when no --generator is given")
    low, high = args.range
    if not low < high:
        raise CLIError(f"--range: Z1 must be smaller than Z2, got {low} {high}")
    selector = parse_selector(args.neuron)

    # Check model, generator, encoder and neuron on one probe before sampling.
    if generator is not None:
        size = _latent_size(generator, args.latent_dim)
        z = torch.zeros(2, size, device=device)
        probe = probe_model(generator, z, "--latent-dim", "the generator")
        if not torch.is_tensor(probe):
            raise CLIError("--generator: must return one tensor of inputs")
        if input_shape is not None and tuple(probe.shape[1:]) != input_shape:
            raise CLIError(
                f"--input-shape: the generator makes inputs of shape "
                f"{tuple(probe.shape[1:])}, not {input_shape}"
            )
        generator = _generator_parameterization(generator, args.latent_dim)
    else:
        probe = torch.full((2, *input_shape), 0.5, device=device)
    probe_model(
        model, probe, "--generator" if generator else "--input-shape", "the model"
    )
    if encoder is not None:
        probe_model(encoder, probe, "--encoder", "the encoder")
    check_selector(selector, probe_layer(model, layer, probe, "--layer"))

    sampler = NeuronInverseSet(model, layer, generator=generator, encoder=encoder)
    options = {
        "neuron_selector": "--neuron",
        "activation_range": "--range",
        "n_samples": "--n-samples",
        "batch_size": "--batch-size",
        "input_shape": "--input-shape",
        "latent_shape": "--latent-dim",
        "seed": "--seed",
    }
    with _library_arguments(options):
        result = sampler.sample(
            selector,
            activation_range=(low, high),
            n_samples=args.n_samples,
            batch_size=args.batch_size,
            input_shape=input_shape,
            seed=args.seed,
            show_progress=not args.quiet,
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
    prepare_out(args.out, args.overwrite)
    generator = build_model(args.generator, args.weights, device, "--generator")
    layer = resolve_layer(generator, args.layer)
    latent_dim = _latent_size(generator, args.latent_dim)
    gen = torch.Generator().manual_seed(args.seed)
    z0 = torch.randn(1, latent_dim, generator=gen).to(device)
    probe_model(generator, z0, "--latent-dim", "the generator")
    probe_layer(generator, layer, z0, "--layer")
    egbas = EGBAS(generator, layer)
    options = {"n_samples": "--n-samples", "seed": "--seed", "z0": "--latent-dim"}
    with _library_arguments(options):
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

    device = parse_device(args.device)
    prepare_out(args.out, args.overwrite)
    return run_demo(
        args.out,
        device=device,
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
    parser = _Parser(
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
