r"""The baseline of E-GBAS: latents uniform in an L2 ball around the query,
with their membership of the generative region measured."""

from typing import Iterator, Tuple

import torch
from torch import Tensor

from ...._utils.validation import make_generator
from .region import LayerSplit, SignPattern

__all__ = ["ball_acceptance", "ball_latents", "bisect_radius", "epsilon_ball"]


def ball_latents(
    z0: Tensor, n: int, epsilon: float, batch_size: int, gen: torch.Generator
) -> Iterator[Tensor]:
    r"""``n`` latents :math:`z_0 + \epsilon\, r^{1/d} v / \|v\|` in chunks of at
    most ``batch_size`` (drawn on the CPU chunk by chunk, so nothing of size
    ``n`` is held here)."""
    latent_shape = z0.shape[1:]
    dim = z0[0].numel()
    root = z0.flatten(1)
    for start in range(0, n, batch_size):
        k = min(batch_size, n - start)
        direction = torch.randn(k, dim, generator=gen)
        direction = direction / direction.norm(dim=1, keepdim=True).clamp_min(1e-12)
        radius = torch.rand(k, 1, generator=gen).pow(1.0 / dim)
        offsets = (epsilon * radius * direction).to(root)
        yield (root + offsets).reshape(k, *latent_shape)


def epsilon_ball(
    split: LayerSplit,
    z0: Tensor,
    region: SignPattern,
    n_samples: int,
    epsilon: float,
    batch_size: int,
    gen: torch.Generator,
) -> Tuple[Tensor, Tensor, Tensor]:
    """``(latents, outputs, in_region)`` of ``n_samples`` ball samples,
    evaluated ``batch_size`` at a time."""
    latents, outputs, inside = [], [], []
    for chunk in ball_latents(z0, n_samples, epsilon, batch_size, gen):
        pre, out = split.run(chunk)
        latents.append(chunk)
        outputs.append(out.detach())
        inside.append(region.contains(pre))
    return torch.cat(latents), torch.cat(outputs), torch.cat(inside)


def ball_acceptance(
    split: LayerSplit,
    z0: Tensor,
    region: SignPattern,
    n_samples: int,
    epsilon: float,
    batch_size: int,
    gen: torch.Generator,
) -> float:
    """Fraction of ``n_samples`` ball samples in the region, from the sign
    patterns alone (the forward stops at the layer; no outputs are kept)."""
    inside = 0
    for chunk in ball_latents(z0, n_samples, epsilon, batch_size, gen):
        inside += int(region.contains(split.pre_activations(chunk)).sum())
    return inside / n_samples


def bisect_radius(
    split: LayerSplit,
    z0: Tensor,
    region: SignPattern,
    target_acceptance: float,
    n_samples: int,
    iterations: int,
    seed,
    interval: Tuple[float, float],
) -> Tuple[float, float]:
    """Geometric bisection of the ball's radius: the final ``(low, high)``,
    ``low`` the largest radius seen to meet ``target_acceptance`` (the same
    ``seed``, hence the same directions, at every radius)."""
    low, high = interval
    for _ in range(iterations):
        mid = (low * high) ** 0.5
        rate = ball_acceptance(
            split, z0, region, n_samples, mid, 256, make_generator(seed)
        )
        low, high = (mid, high) if rate >= target_acceptance else (low, mid)
    return low, high
