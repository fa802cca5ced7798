r"""Step 1 of E-GBAS: the smallest supporting generative boundary set, a
Bernoulli mask on the layer's units that keeps the query's output.

The relaxation of the Bernoulli mask is Captum's own
:class:`captum.module.BinaryConcreteStochasticGates` (hard-concrete gates,
Louizos et al. 2018): each unit's gate is a stretched, rectified
binary-concrete variable, exactly 0 or 1 with positive probability, and its
L0 penalty is the probability :math:`\theta_i` that the gate is non-zero,
the expected mask size the paper penalises with :math:`\|\theta\|_1`.
"""

import math
import warnings
from contextlib import contextmanager
from typing import Dict, Iterator

import torch
from captum.module import BinaryConcreteStochasticGates
from torch import Tensor

from ...._utils.hooks import preserve_model_state, replace_layer_output
from ...._utils.progress import progress
from .region import LayerSplit
from .result import EGBASWarning

__all__ = ["empty_mask_error", "keep_probabilities"]


@contextmanager
def _seeded_default_rng(device: torch.device, seed: int) -> Iterator[None]:
    """Captum's gates draw their noise from the default generator of their
    device: seed it inside a forked RNG state, restored on exit, so a call is
    reproducible and leaves the user's global RNG untouched."""
    cuda = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda, device_type="cuda"):
        torch.default_generator.manual_seed(seed)
        if device.type == "cuda":
            index = device.index if device.index is not None else 0
            torch.cuda.default_generators[index].manual_seed(seed)
        yield


def empty_mask_error(split: LayerSplit, latents: Tensor, target: Tensor) -> Tensor:
    r"""Per query, :math:`\frac{1}{|G|}\|g_{L:\ell+1}(h \odot 0) - G(z_0)\|^2`:
    the error of the empty mask, the scale of the reconstruction term."""
    with torch.no_grad():
        pre = split.run(latents)[0]
        none = split.run_masked(latents, torch.zeros_like(pre[0], dtype=torch.bool))
    return (none - target).pow(2).flatten(1).mean(dim=1)


def _make_gates(
    n_gates: int, reg_weight: float, temperature: float, init_keep: float
) -> BinaryConcreteStochasticGates:
    """One gate per unit of every query, all starting at ``init_keep``.

    The L0 term is summed over all gates (``"sum"``), which is the sum of the
    queries' terms, since each query's term is the sum over its own gates.
    (Captum's ``"none"`` reduction scales the probabilities in place, which
    breaks their backward pass.)
    """
    gates = BinaryConcreteStochasticGates(
        n_gates, reg_weight=reg_weight, temperature=temperature, reg_reduction="sum"
    )
    with torch.no_grad():
        # P(gate > 0) = sigmoid(log_alpha - offset): start at init_keep.
        start = math.log(init_keep / (1.0 - init_keep)) + gates.active_prob_offset
        gates.log_alpha_param.fill_(start)
    return gates


def keep_probabilities(
    split: LayerSplit,
    latents: Tensor,
    sparsity: float,
    n_steps: int,
    lr: float,
    temperature: float,
    init_keep: float,
    gen: torch.Generator,
    show_progress: bool,
) -> Tensor:
    r""":math:`\theta^*` ``(N, *layer_shape)`` for a batch of queries (see
    :meth:`EGBAS.attribute` for the objective)."""
    with preserve_model_state(split.generator):
        with torch.no_grad():
            pre0, target = split.run(latents)
            scale = empty_mask_error(split, latents, target)
        n, layer_shape = pre0.shape[0], pre0.shape[1:]
        units = pre0[0].numel()
        flat = target.flatten(1)
        # The empty mask reproducing the output means the output does not
        # depend on the layer at that query: no boundary supports it.
        tiny = 1e-12 * flat.pow(2).mean(dim=1).clamp_min(1e-30)
        independent = scale <= tiny
        if bool(independent.any()):
            warnings.warn(
                f"{int(independent.sum())} of {n} queries: zeroing every unit of "
                "the layer leaves the output unchanged, so no boundary supports "
                "it (keep probabilities 0)",
                EGBASWarning,
                stacklevel=4,
            )
        seed = int(torch.randint(0, 2**62, (1,), generator=gen))
        with _seeded_default_rng(pre0.device, seed):
            # Captum initialises the gates from the global RNG too.
            gates = _make_gates(n * units, sparsity / units, temperature, init_keep)
            gates = gates.to(device=pre0.device, dtype=pre0.dtype).train()
            optimiser = torch.optim.Adam(gates.parameters(), lr=lr)
            step: Dict[str, Tensor] = {}

            def gate(out: Tensor) -> Tensor:
                gated, step["l0"] = gates(out.reshape(1, -1))
                return gated.reshape(out.shape)

            with (
                torch.enable_grad(),
                replace_layer_output(split.layer, gate),
                progress(n_steps, show_progress, "E-GBAS mask") as bar,
            ):
                for _ in range(n_steps):
                    out = split.generator(latents)
                    recon = (out - target).pow(2).flatten(1).mean(dim=1)
                    loss = (recon / scale.clamp_min(tiny)).sum() + step["l0"]
                    optimiser.zero_grad()
                    loss.backward()
                    optimiser.step()
                    bar.update()
        theta = gates.get_gate_active_probs().reshape(n, *layer_shape)
        theta[independent] = 0.0
        return theta.to(pre0.dtype)
