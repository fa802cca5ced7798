r"""Short activation maximisation: how high can the neuron go?

:func:`maximise_activation` runs Adam on the neuron's activation from a few
random codes and reports the median activation at the starts, :math:`a_0`,
and the highest one found, :math:`a_{\max}`. :meth:`NeuronInverseSet.top_range`
turns them into a band near the top.
"""

from typing import Callable, Optional, Tuple

import torch
from torch import nn

from ...._utils.progress import progress
from ....param import PooledEncoder
from .constraints import ConstraintSet
from .loop import apply_transform, check_batch_memory
from .options import project_codes

__all__ = ["maximise_activation"]


def maximise_activation(
    constraints: ConstraintSet,
    param: nn.Module,
    transform: Optional[Callable],
    n_starts: int,
    n_steps: int,
    lr: float,
    code_bound: Optional[float],
    gen: torch.Generator,
    device: torch.device,
    show_progress: bool = False,
    desc: str = "top_range",
) -> Tuple[float, float]:
    """``(a0, a_max)`` of the first constraint's neuron (see the module doc).

    Runs inside the caller's :func:`preserve_model_state` block.
    """
    check_batch_memory(
        param, constraints, PooledEncoder(), device, "n_starts", n_starts, n_starts
    )
    codes = param.random_codes(n_starts, generator=gen, device=device)
    transform_gen = torch.Generator().manual_seed(
        int(torch.randint(2**62, (1,), generator=gen))
    )
    codes = codes.detach().clone().requires_grad_(True)
    with torch.no_grad():
        start = constraints.values(param(codes))[:, 0]
    best = float(start.max())
    opt = torch.optim.Adam([codes], lr=lr)
    with progress(n_steps, show_progress, desc) as bar:
        for _ in range(n_steps):
            x = param(codes)
            x_in = (
                apply_transform(transform, x, transform_gen)
                if transform is not None
                else x
            )
            acts = constraints.values(x_in, grad=True)
            opt.zero_grad()
            (-acts[:, 0].sum()).backward()
            opt.step()
            project_codes(codes, code_bound)
            with torch.no_grad():
                clean = constraints.values(param(codes))
            best = max(best, float(clean[:, 0].max()))
            bar.update(1)
            bar.set_postfix(best=f"{best:.4g}")
    return float(start.median()), best
