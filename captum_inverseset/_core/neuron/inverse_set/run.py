"""One run of the sampler, from checked arguments to the result: memory
check, the starting pool (data, prior screen), the loop, the warnings."""

import warnings
from typing import Any, Callable, List, Optional, Sequence

from torch import Tensor, nn

from ...._utils.hooks import preserve_model_state
from ...._utils.validation import make_generator, model_device
from ....param import PooledEncoder
from .constraints import ConstraintSet
from .loop import InverseSetLoop, check_batch_memory, encode
from .options import SamplerOptions, resolve_code_bound
from .result import InfeasibleSamplesWarning, InverseSetResult
from .starts import build_pool

__all__ = ["run_sampler"]


def run_sampler(
    forward_func: Callable,
    modules: List[nn.Module],
    encoder: Optional[Callable],
    has_generator: bool,
    param: nn.Module,
    transform: Optional[Callable],
    constraints: ConstraintSet,
    n_samples: int,
    batch_size: int,
    input_shape: Optional[Sequence[int]],
    initial_codes: Optional[Tensor],
    seed: Optional[int],
    show_progress: bool,
    options: SamplerOptions,
    data: Any = None,
    stacklevel: int = 5,
) -> InverseSetResult:
    """See :meth:`NeuronInverseSet.sample`; ``modules`` are kept as found."""
    kind = (
        "attribute"
        if initial_codes is not None
        else ("generator" if has_generator else "input")
    )
    o = options.checked(kind)
    code_bound = resolve_code_bound(param, o.code_bound)
    gen = make_generator(seed)
    device = model_device(forward_func, default=model_device(param))
    encoder = encoder if encoder is not None else PooledEncoder()
    with preserve_model_state(modules):
        check_batch_memory(
            param,
            constraints,
            encoder,
            device,
            "batch_size",
            batch_size,
            min(batch_size, n_samples),
            n_samples,
            input_shape,
        )
        loop = InverseSetLoop(
            constraints,
            param,
            transform,
            encoder,
            o,
            code_bound,
            gen,
            device,
            show_progress,
        )
        pool, baseline, notes = None, None, []
        if initial_codes is None:
            n_screen = o.screen
            if n_screen == "auto":
                n_screen = min(max(8 * n_samples, 256), 4096) if has_generator else 0
            pool, baseline, notes = build_pool(
                param,
                constraints,
                lambda x: encode(x, encoder),
                data,
                n_screen,
                n_samples,
                min(batch_size, n_samples),
                gen,
                device,
                code_bound,
            )
        result = loop.run(n_samples, batch_size, initial_codes, input_shape, pool)
    result.data_baseline = baseline
    result.notes = notes + list(result.notes or [])
    bad = int((~result.feasible).sum())
    if bad:
        warnings.warn(
            f"{bad} of {result.n_samples} samples are outside their band(s) "
            f"after at most {o.max_steps} steps: they are returned as they are "
            "(flagged feasible=False in sample()'s result); raise max_steps, "
            "check the band with top_range(), or pass data",
            InfeasibleSamplesWarning,
            stacklevel=stacklevel,
        )
    return result
