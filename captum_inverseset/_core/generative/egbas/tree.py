r"""Step 2 of E-GBAS: a boundary-constrained rapidly-exploring random tree in
the generative region of the query."""

import math
from typing import List, Tuple

import torch
from torch import Tensor

from ...._utils.progress import progress
from .region import LayerSplit, SignPattern

__all__ = ["grow_tree"]


def grow_tree(
    split: LayerSplit,
    z0: Tensor,
    region: SignPattern,
    n_samples: int,
    step_size: float,
    batch_size: int,
    exploration_scale: float,
    norm_bounds: Tuple[float, float],
    max_iterations: int,
    n_step_halvings: int,
    gen: torch.Generator,
    show_progress: bool,
) -> Tuple[Tensor, Tensor, Tensor, int]:
    """``(latents, outputs, parents, n_proposed)`` of the nodes found besides
    the root (fewer than ``n_samples`` when the tree could not grow)."""
    latent_shape = z0.shape[1:]
    dim = z0[0].numel()
    root = z0.flatten(1)
    low, high = norm_bounds
    fractions = [0.5**i for i in range(n_step_halvings)]
    nodes = torch.empty(n_samples + 1, dim, device=z0.device, dtype=z0.dtype)
    nodes[0] = root[0]
    parents = torch.empty(n_samples, dtype=torch.long)
    outputs: List[Tensor] = []
    n_nodes, n_proposed, iteration = 1, 0, 0
    with progress(n_samples, show_progress, "E-GBAS tree") as bar:
        while n_nodes - 1 < n_samples and iteration < max_iterations:
            iteration += 1
            noise = torch.randn(batch_size, dim, generator=gen)
            targets = root + exploration_scale * noise.to(root)
            nearest = torch.cdist(targets, nodes[:n_nodes]).argmin(dim=1)
            base = nodes[nearest]
            direction = targets - base
            length = direction.norm(dim=1, keepdim=True)
            step = length.clamp(max=step_size) / length.clamp_min(1e-12)
            # Each extension is tried at the full step and at shorter ones
            # (halving), all in one forward pass; the longest in-region one is
            # kept, so the tree still grows near a boundary.
            candidates = torch.cat([base + direction * (step * f) for f in fractions])
            pre, out = split.run(candidates.reshape(-1, *latent_shape))
            n_proposed += candidates.shape[0]
            ok = region.contains(pre)
            norms = candidates.norm(dim=1)
            ok &= (norms >= low) & (norms <= high)
            ok = ok.reshape(len(fractions), batch_size)
            found = ok.any(dim=0)
            first = ok.float().argmax(dim=0)  # longest step that stays in
            chosen = (
                first * batch_size + torch.arange(batch_size, device=first.device)
            )[found]
            chosen = chosen[: n_samples - (n_nodes - 1)]
            k = int(chosen.numel())
            if k:
                nodes[n_nodes : n_nodes + k] = candidates[chosen]
                parent = nearest[chosen % batch_size]
                parents[n_nodes - 1 : n_nodes - 1 + k] = parent.cpu() - 1
                outputs.append(out[chosen])
                n_nodes += k
                bar.update(k)
    n_found = n_nodes - 1
    latents = nodes[1:n_nodes].reshape(n_found, *latent_shape)
    outs = torch.cat(outputs, dim=0) if outputs else None
    return latents, outs, parents[:n_found].to(z0.device), n_proposed


def norm_bounds(latent_bound, root: Tensor, dim: int, check) -> Tuple[float, float]:
    """Allowed latent norms: ``(0, inf)``, ``(0, bound)`` or the typical shell
    of a standard normal prior, widened to contain the query."""
    z0_norm = float(root.norm())
    if latent_bound is None:
        return 0.0, math.inf
    if isinstance(latent_bound, str):
        if latent_bound != "typical":
            raise ValueError(
                "latent_bound must be None, a positive number or 'typical', "
                f"got {latent_bound!r}"
            )
        centre = math.sqrt(max(dim - 0.5, 0.0))
        half_width = 3.0 / math.sqrt(2.0)
        low = max(centre - half_width, 0.0)
        return min(low, z0_norm), max(centre + half_width, z0_norm)
    bound = check("latent_bound", latent_bound)
    if z0_norm > bound:
        raise ValueError(f"z0 has norm {z0_norm:.3g}, outside latent_bound={bound:.3g}")
    return 0.0, bound
