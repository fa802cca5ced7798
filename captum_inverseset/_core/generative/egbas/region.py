r"""The generative region of a query: latents, masks and sign patterns.

Everything E-GBAS evaluates goes through :class:`LayerSplit`: the layer's
pre-activations :math:`h = g_{\ell:1}(z)` and the generator's outputs
:math:`G(z)`, through the package's hook context managers. The sign pattern
of a latent on a mask :math:`M` is compared with the query's by
:class:`SignPattern`.
"""

import math
import warnings
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from ...._utils.hooks import (
    capture_layer,
    mask_units,
    replace_layer_output,
    stop_after_layer,
)
from ...._utils.layer_eval import LayerNotCalledError, layer_eval
from ...._utils.validation import check_finite, model_device
from .result import EGBASWarning

__all__ = [
    "LayerSplit",
    "SignPattern",
    "check_mask",
    "declared_latent_shape",
    "format_queries",
    "format_query",
]


def declared_latent_shape(generator: Any) -> Optional[Tuple[int, ...]]:
    """The latent shape a generator declares (``code_shape`` or
    ``latent_dim``, as the zoo's generators do), None when it declares none."""
    shape = getattr(generator, "code_shape", None)
    if isinstance(shape, (tuple, list, torch.Size)) and all(
        isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in shape
    ):
        return tuple(int(s) for s in shape)
    dim = getattr(generator, "latent_dim", None)
    if isinstance(dim, int) and not isinstance(dim, bool) and dim > 0:
        return (dim,)
    return None


def _model_dtype(generator: Any) -> Optional[torch.dtype]:
    if isinstance(generator, nn.Module):
        for p in generator.parameters():
            if p.is_floating_point():
                return p.dtype
    return None


def _check_latent_tensor(name: str, z: Any) -> Tensor:
    if not torch.is_tensor(z):
        raise ValueError(f"{name} must be a tensor, got {type(z).__name__}")
    if z.dim() == 0:
        raise ValueError(f"{name} must have at least one dimension")
    if not z.is_floating_point():
        raise ValueError(f"{name} must be a floating point tensor, got {z.dtype}")
    check_finite(name, z)
    return z


def _to_model(generator: Any, z: Tensor) -> Tensor:
    dtype = _model_dtype(generator) or z.dtype
    return z.detach().to(device=model_device(generator), dtype=dtype)


def format_query(generator: Any, z0: Any, name: str = "z0") -> Tensor:
    """One query latent as a batch of one, ``(1, *latent_shape)``, on the
    generator's device and dtype.

    ``z0`` is ``(1, *latent_shape)`` or ``latent_shape``. When the generator
    declares its latent shape (``code_shape`` or ``latent_dim``), a latent of
    another size is refused here; otherwise the generator's own error on a
    wrong shape propagates unchanged.
    """
    z0 = _check_latent_tensor(name, z0)
    declared = declared_latent_shape(generator)
    if declared is not None:
        size = math.prod(declared)
        if z0.dim() >= 2 and z0.shape[0] == 1 and z0[0].numel() == size:
            return _to_model(generator, z0)
        if z0.numel() == size:
            return _to_model(generator, z0.unsqueeze(0))
        raise ValueError(
            f"{name} must be one latent of the generator's shape {declared} "
            f"(or (1, *{declared})), got shape {tuple(z0.shape)}"
        )
    if z0.dim() >= 2 and z0.shape[0] == 1:
        return _to_model(generator, z0)
    return _to_model(generator, z0.unsqueeze(0))


def format_queries(generator: Any, inputs: Any, name: str = "inputs") -> Tensor:
    """A batch of query latents ``(N, *latent_shape)`` (N >= 1), on the
    generator's device and dtype; the declared latent size is checked."""
    inputs = _check_latent_tensor(name, inputs)
    if inputs.dim() < 2 and declared_latent_shape(generator) not in (None, (1,)):
        inputs = inputs.unsqueeze(0)
    if inputs.shape[0] == 0:
        raise ValueError(f"{name} holds no latents")
    declared = declared_latent_shape(generator)
    if declared is not None and inputs[0].numel() != math.prod(declared):
        raise ValueError(
            f"{name} must be latents of the generator's shape (N, *{declared}), "
            f"got shape {tuple(inputs.shape)}"
        )
    return _to_model(generator, inputs)


def check_mask(
    mask: Any, layer_shape: torch.Size, device: torch.device, warn_empty: bool = True
) -> Tensor:
    """A supporting boundary set as a bool tensor of the layer's shape."""
    if not torch.is_tensor(mask):
        raise ValueError(f"mask must be a bool tensor, got {type(mask).__name__}")
    if mask.device.type == "meta":
        raise ValueError("mask is a meta tensor: it holds no values")
    if tuple(mask.shape) != tuple(layer_shape):
        raise ValueError(
            f"mask must have the layer's shape without batch "
            f"{tuple(layer_shape)}, got {tuple(mask.shape)}"
        )
    if mask.dtype != torch.bool:
        if mask.is_complex() or not bool(((mask == 0) | (mask == 1)).all()):
            raise ValueError("mask must be bool (or 0/1 valued)")
        mask = mask != 0
    if warn_empty and not bool(mask.any()):
        warnings.warn(
            "mask is all False: no boundary constrains the region, which is "
            "then the whole latent space",
            EGBASWarning,
            stacklevel=4,
        )
    return mask.to(device)


class SignPattern:
    r"""The query's signs on the units of a mask :math:`M`; tests whether
    other latents' pre-activations have them,
    :math:`[h_i(z) > 0] = [h_i(z_0) > 0]\ \forall i \in M`."""

    def __init__(self, query_pre: Tensor, mask: Tensor) -> None:
        self.units = mask.flatten().nonzero().squeeze(1)
        self.signs = query_pre.flatten()[self.units] > 0

    def contains(self, pre: Tensor) -> Tensor:
        """bool ``(N,)``: which rows of ``pre`` (``(N, *layer_shape)``) are in
        the region (all True for an empty mask)."""
        signs = pre.flatten(1).index_select(1, self.units) > 0
        return signs.eq(self.signs).all(dim=1)


class LayerSplit:
    r""":math:`G = g_{L:\ell+1} \circ g_{\ell:1}` at ``layer``: the layer's
    output :math:`h` (its last call when a forward calls it more than once,
    as Captum's ``LayerActivation``) and the generator's output.

    :meth:`pre_activations` is what a tree candidate costs: the forward pass
    ends at the layer (:func:`~captum_inverseset._utils.hooks.stop_after_layer`)
    when the layer runs once per forward, as seen by the last :meth:`run`;
    otherwise (a layer called several times, or a ``device_ids`` for
    DataParallel) it goes through Captum's layer evaluation
    (:func:`~captum_inverseset._utils.layer_eval.layer_eval`).
    """

    def __init__(
        self,
        generator: Callable,
        layer: nn.Module,
        device_ids: Optional[List[int]] = None,
    ) -> None:
        self.generator = generator
        self.layer = layer
        self.device_ids = device_ids
        self.calls_per_forward: Optional[int] = None
        self.partial_share: Optional[float] = None
        self._shares: Dict[Any, Optional[float]] = {}

    def run(self, latents: Tensor) -> Tuple[Tensor, Tensor]:
        """``(h, G(z))`` for a batch of latents, in one forward pass."""
        with capture_layer(self.layer) as cap:
            outputs = self.generator(latents)
        if not cap.outputs:
            raise LayerNotCalledError(
                "layer was not called when the generator ran: is it used by "
                "the generator's forward?"
            )
        self.calls_per_forward = len(cap.outputs)
        pre = cap.outputs[-1]
        if not torch.is_tensor(pre):
            raise ValueError(
                f"layer must output a tensor (its pre-activations), got "
                f"{type(pre).__name__}"
            )
        return pre, outputs

    def measure_cost(self, latents: Tensor) -> Optional[float]:
        """``partial_share``: the FLOPs of the forward up to the layer over
        those of the whole forward (matrix products and convolutions, counted
        by ``torch.utils.flop_counter``), None when nothing is counted.

        FLOPs depend on the latent's shape, not on its values or the weights:
        measured once per latent shape."""
        key = (tuple(latents.shape[1:]), latents.dtype, latents.device)
        if key in self._shares:
            self.partial_share = self._shares[key]
            return self.partial_share
        with FlopCounterMode(display=False) as whole:
            self.run(latents)
        with FlopCounterMode(display=False) as part:
            self.pre_activations(latents)
        total = whole.get_total_flops()
        self.partial_share = part.get_total_flops() / total if total else None
        self._shares[key] = self.partial_share
        return self.partial_share

    def pre_activations(self, latents: Tensor) -> Tensor:
        r""":math:`h = g_{\ell:1}(z)` for a batch of latents, the generator's
        forward stopped at the layer where that gives the same value."""
        if (
            self.calls_per_forward != 1
            or self.device_ids is not None
            or isinstance(self.generator, nn.DataParallel)
        ):
            return layer_eval(
                self.generator, latents, self.layer, device_ids=self.device_ids
            )[0]
        with stop_after_layer(self.layer) as cap:
            self.generator(latents)
        if not cap.outputs:
            raise LayerNotCalledError(
                "layer was not called when the generator ran: is it used by "
                "the generator's forward?"
            )
        return cap.outputs[0]

    def outputs(self, latents: Tensor, batch_size: int) -> Tensor:
        """:math:`G(z)` for ``latents``, ``batch_size`` at a time."""
        return torch.cat(
            [
                self.generator(latents[start : start + batch_size])
                for start in range(0, latents.shape[0], batch_size)
            ]
        )

    def run_masked(self, latents: Tensor, mask: Tensor) -> Tensor:
        r""":math:`g_{L:\ell+1}(h \odot M)`: the output with the units outside
        ``mask`` set to 0 (selected, never multiplied, so nothing leaks)."""
        keep = mask.unsqueeze(0)
        with replace_layer_output(self.layer, lambda out: mask_units(out, keep)):
            return self.generator(latents)
