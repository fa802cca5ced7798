"""Support of the ``captum-inverseset`` command: option types, loading of
models, weights, layers and data, probes of the user's model, and the rule
that turns user errors into one line naming the option (:class:`CLIError`).
"""

import argparse
import importlib
import json
import math
import os
import re
import sys
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterator, Optional

import torch
from torch import nn

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))

TRUST_NOTE = (
    "PKG.MODULE:FACTORY imports PKG.MODULE and calls FACTORY(): this runs that "
    "code with your permissions (as torch.hub does), so only name code you "
    "trust. The working directory is on the import path."
)


class CLIError(Exception):
    """A user error: reported as one line, exit code 2."""


class ParserWithOneLineErrors(argparse.ArgumentParser):
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


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def positive_float(text: str) -> float:
    value = _number(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text!r}")
    return value


def nonnegative_float(text: str) -> float:
    value = _number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be non-negative, got {text!r}")
    return value


def open_unit_float(text: str) -> float:
    value = _number(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must lie in (0, 1), got {text!r}")
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


def load_data_file(spec: str) -> dict:
    """The dict of a ``--data`` file (loaded weights-only)."""
    if not os.path.isfile(spec):
        raise CLIError(f"--data: expected 'digits' or a .pt file, got {spec!r}")
    try:
        obj = torch.load(spec, map_location="cpu", weights_only=True)
    except Exception:
        raise CLIError(f"--data: {spec!r} is not a plain tensor file") from None
    if not isinstance(obj, dict) or "inputs" not in obj:
        raise CLIError("--data: the file must hold a dict with 'inputs' (and 'labels')")
    return obj


def load_data(spec: str, device: torch.device):
    """``digits`` (the shipped test split) or a ``.pt`` file with tensors
    ``inputs`` and ``labels`` saved by ``torch.save`` (loaded weights-only)."""
    if spec == "digits":
        from .zoo import load_digits_dataset

        data = load_digits_dataset()
        return data.test_inputs.to(device), data.test_labels.to(device)
    obj = load_data_file(spec)
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

    with as_option("--data"):
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


def _parse_index(part: str, text: str):
    part = part.strip()
    if ":" not in part:
        try:
            value = int(part)
        except ValueError:
            value = None
        if value is None or value < 0:
            raise CLIError(
                f"--neuron: {part!r} in {text!r} is not a non-negative index or a "
                "slice (start:stop[:step])"
            )
        return value
    pieces = part.split(":")
    if len(pieces) > 3:
        raise CLIError(f"--neuron: {part!r} in {text!r} is not a slice")
    try:
        bounds = [int(p) if p.strip() else None for p in pieces]
    except ValueError:
        raise CLIError(
            f"--neuron: {part!r} in {text!r} is not a slice (start:stop[:step])"
        ) from None
    if bounds[-1] == 0 and len(bounds) == 3:
        raise CLIError(f"--neuron: slice step cannot be zero in {text!r}")
    return slice(*bounds)


def parse_selector(text: str):
    """Captum neuron selectors from the command line: ``3`` -> 3, ``3,1,1``
    -> (3, 1, 1), ``5,:,:`` -> (5, slice(None), slice(None)) (channel 5
    summed over space), ``5,0:2,:`` (a region)."""
    parts = [_parse_index(p, text) for p in text.split(",")]
    if len(parts) == 1 and isinstance(parts[0], int):
        return parts[0]
    return tuple(parts)


class Preprocessed(nn.Module):
    """``model(preprocess(x))``: the methods work in the space before the
    preprocessing (e.g. [0, 1] images for a normalised model)."""

    def __init__(self, preprocess: nn.Module, model: nn.Module) -> None:
        super().__init__()
        self.preprocess = preprocess
        self.model = model

    def forward(self, x, *args):
        return self.model(self.preprocess(x), *args)


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel (dimension 1), as
    ``torchvision.transforms.Normalize`` on a batch."""

    def __init__(self, mean, std) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32))

    def forward(self, x):
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return (x - self.mean.reshape(shape)) / self.std.reshape(shape)


def _floats(text: str, what: str):
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise CLIError(
            f"{what} must be comma-separated numbers, got {text!r}"
        ) from None
    if not values or not all(math.isfinite(v) for v in values):
        raise CLIError(f"{what} must be finite numbers, got {text!r}")
    return values


def build_preprocess(args, device: torch.device) -> Optional[nn.Module]:
    """The module of ``--normalize MEAN STD`` or ``--preprocess PKG:FN``."""
    normalize = getattr(args, "normalize", None)
    factory = getattr(args, "preprocess", None)
    if normalize and factory:
        raise CLIError("--normalize and --preprocess: give one of them")
    if normalize:
        mean = _floats(normalize[0], "--normalize MEAN")
        std = _floats(normalize[1], "--normalize STD")
        if len(mean) != len(std):
            raise CLIError(
                f"--normalize: MEAN has {len(mean)} values but STD {len(std)}"
            )
        if min(std) <= 0:
            raise CLIError("--normalize: every STD must be positive")
        return Normalize(mean, std).to(device)
    if factory:
        return build_model(factory, None, device, "--preprocess")
    return None


def wrap_model(model: nn.Module, preprocess: Optional[nn.Module]) -> nn.Module:
    return model if preprocess is None else Preprocessed(preprocess, model).eval()


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
def library_arguments(options: Dict[str, str]) -> Iterator[None]:
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
def as_option(option: str) -> Iterator[None]:
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
    pre = getattr(model, "preprocess", None)
    if isinstance(pre, Normalize) and pre.mean.numel() > 1:
        channels = inputs.shape[1] if inputs.dim() > 1 else None
        if channels != pre.mean.numel():
            raise CLIError(
                f"--normalize: {pre.mean.numel()} values per channel, but the "
                f"inputs have {channels} channel(s) (shape {tuple(inputs.shape[1:])})"
            )
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
    """``--neuron`` must index one unit (or a region, with slices) of the
    layer output, batch dimension aside."""
    index = selector if isinstance(selector, tuple) else (selector,)
    unit_shape = tuple(layer_output.shape[1:])
    if len(index) != len(unit_shape):
        raise CLIError(
            f"--neuron: the layer output has unit shape {unit_shape}, so give "
            f"{len(unit_shape)} index(es) or slice(s) (e.g. 5,:,: for a channel), "
            f"got {len(index)}"
        )
    for i, size in zip(index, unit_shape):
        if isinstance(i, int) and not 0 <= i < size:
            raise CLIError(
                f"--neuron: index {i} out of range for the layer's unit shape "
                f"{unit_shape}"
            )
        if isinstance(i, slice) and not range(size)[i]:
            raise CLIError(
                f"--neuron: slice {i.start}:{i.stop} selects nothing of a "
                f"dimension of size {size} (unit shape {unit_shape})"
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


def write_json(path: str, payload: dict) -> None:
    with open(path, "w") as fh:
        json.dump(payload, fh, indent=2, default=float)


def write_outputs(result, out_dir: str, name: str, payload: dict) -> dict:
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
    write_json(os.path.join(out_dir, f"{name}.json"), payload)
    return payload
