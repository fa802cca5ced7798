"""Conformance cases of :class:`~captum_inverseset.EGBAS` (generator-side)."""

import torch

from captum_inverseset import EGBAS

from .harness import Case
from .models import make_digits_generator


def _latents(seed: int, n: int = 2) -> torch.Tensor:
    return torch.randn(n, 8, generator=torch.Generator().manual_seed(seed))


def _call_attribute(method, model, seed):
    return method.attribute(_latents(seed), n_steps=5, seed=seed)


def _call_sample(method, model, seed):
    # mask=None also runs the mask optimisation inside sample.
    return method.sample(
        _latents(seed, 1),
        n_samples=12,
        step_size=0.2,
        seed=seed,
        mask_kwargs={"n_steps": 5},
    )


def _call_epsilon(method, model, seed):
    mask = torch.ones(16, 8, 8, dtype=torch.bool)
    return method.epsilon_sample(
        _latents(seed, 1), n_samples=12, epsilon=0.3, mask=mask, seed=seed
    )


def _bad_n_samples(method, model):
    # No neuron selector: an invalid argument checked after hooks could exist.
    method.sample(_latents(0, 1), n_samples=0, mask_kwargs={"n_steps": 2})


def _bad_mask(method, model):
    method.sample(_latents(0, 1), mask=torch.ones(3, dtype=torch.bool))


CASES = [
    Case(
        id="EGBAS-digits_generator-fc2-attribute",
        make_model=make_digits_generator,
        layer="fc2",
        make_method=EGBAS,
        call=_call_attribute,
        call_bad_selector=_bad_n_samples,
        bad_call_errors=(ValueError,),
    ),
    Case(
        id="EGBAS-digits_generator-fc1-sample",
        make_model=make_digits_generator,
        layer="fc1",
        make_method=EGBAS,
        call=_call_sample,
        call_bad_selector=_bad_mask,
        bad_call_errors=(ValueError,),
    ),
    Case(
        id="EGBAS-digits_generator-deconv1-epsilon",
        make_model=make_digits_generator,
        layer="deconv1",
        make_method=EGBAS,
        call=_call_epsilon,
        call_bad_selector=None,
    ),
]
