r"""Short activation maximisation: how high can the neuron go?

:func:`maximise_activation` runs Adam on the neuron's activation from a few
random codes and reports the median activation at the starts, :math:`a_0`,
and the highest one found, :math:`a_{\max}`. :meth:`NeuronInverseSet.top_range`
turns them into a band near the top.
"""

from typing import Any, Callable, List, Optional, Tuple

import torch
from torch import nn

from ...._utils.hooks import preserve_model_state
from ...._utils.progress import progress
from ...._utils.validation import (
    check_number,
    check_positive_float,
    check_positive_int,
    make_generator,
    model_device,
)
from ....param import PooledEncoder
from .constraints import ConstraintSet
from .loop import apply_transform, check_batch_memory
from .options import (
    AUTO,
    TOP_RANGE_STARTS,
    TOP_RANGE_STEPS,
    check_bool,
    project_codes,
    resolve_code_bound,
)

__all__ = ["maximise_activation", "top_range_band"]


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


def top_range_band(
    forward_func: Callable,
    modules: List[nn.Module],
    make_constraints: Callable[[Any], ConstraintSet],
    param: nn.Module,
    transform: Optional[Callable],
    neuron_selector: Any,
    fraction: Any,
    seed: Optional[int],
    lr: Any,
    code_bound: Any,
    n_starts: Any = TOP_RANGE_STARTS,
    n_steps: Any = TOP_RANGE_STEPS,
    show_progress: Any = False,
) -> Tuple[float, None]:
    """:meth:`NeuronInverseSet.top_range` on checked-later arguments:
    :math:`(a_0 + \\text{fraction}(a_{\\max} - a_0), \\infty)`."""
    fraction = check_number(
        "fraction", fraction, minimum=0, maximum=1, strict_minimum=True
    )
    n_starts = check_positive_int("n_starts", n_starts)
    n_steps = check_positive_int("n_steps", n_steps)
    lr = check_positive_float("lr", AUTO["generator"]["lr"] if lr == "auto" else lr)
    show_progress = check_bool("show_progress", show_progress)
    constraints = make_constraints(neuron_selector)
    bound = resolve_code_bound(param, code_bound)
    gen = make_generator(seed)
    device = model_device(forward_func, default=model_device(param))
    with preserve_model_state(modules):
        a0, best = maximise_activation(
            constraints,
            param,
            transform,
            n_starts,
            n_steps,
            lr,
            bound,
            gen,
            device,
            show_progress,
        )
    return (a0 + fraction * (best - a0), None)
