r"""Step 1 of E-GBAS: the smallest supporting generative boundary set, a
Bernoulli mask on the layer's units that keeps the query's output."""

import math
from typing import Dict

import torch
from torch import Tensor

from ...._utils.hooks import preserve_model_state, replace_layer_output
from ...._utils.progress import progress
from .region import LayerSplit

__all__ = ["keep_probabilities"]


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
    :meth:`EGBAS.attribute`)."""
    with preserve_model_state(split.generator):
        with torch.no_grad():
            pre0, target = split.run(latents)
        layer_shape = pre0.shape
        device = pre0.device
        logits = torch.full(
            layer_shape,
            math.log(init_keep / (1.0 - init_keep)),
            device=device,
            dtype=pre0.dtype,
            requires_grad=True,
        )
        optimiser = torch.optim.Adam([logits], lr=lr)
        relaxed: Dict[str, Tensor] = {}
        with (
            torch.enable_grad(),
            replace_layer_output(split.layer, lambda out: out * relaxed["m"]),
            progress(n_steps, show_progress, "E-GBAS mask") as bar,
        ):
            for _ in range(n_steps):
                u = torch.rand(layer_shape, generator=gen).clamp_(1e-6, 1 - 1e-6)
                u = u.to(device=device, dtype=pre0.dtype)
                noise = torch.log(u) - torch.log1p(-u)
                relaxed["m"] = torch.sigmoid((logits + noise) / temperature)
                out = split.generator(latents)
                recon = (out - target).pow(2).flatten(1).mean(dim=1)
                keep = torch.sigmoid(logits).flatten(1).mean(dim=1)
                loss = (recon + sparsity * keep).sum()
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
                bar.update()
        return torch.sigmoid(logits.detach())
