"""Conformance cases of :class:`~captum_inverseset.EGBAS` (generator-side).

E-GBAS takes no neuron selector; its "bad call" is a latent of the wrong
size given to a generator that does not declare its latent shape, so the
generator itself raises, in the middle of a forward pass during which
E-GBAS's hooks are registered. :class:`UndeclaredGenerator` records how many
hooks were live when its forward ran, and each bad call checks that number
(with ``pytest.fail``, which the harness does not catch), so the harness's
"no hooks left behind" check is not vacuous.
"""

import pytest
import torch
from torch import nn

from captum_inverseset import EGBAS
from captum_inverseset._utils.hooks import count_hooks

from .harness import Case
from .models import make_digits_generator


class UndeclaredGenerator(nn.Module):
    """The shipped digits generator without ``latent_dim``/``code_shape``."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = make_digits_generator()
        self.hooks_seen = []

    def forward(self, z):
        self.hooks_seen.append(count_hooks(self))
        return self.inner(z)


def _latents(seed: int, n: int = 2, dim: int = 8) -> torch.Tensor:
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(seed))


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


def _raises_with_hooks_live(call, model):
    model.hooks_seen.clear()
    try:
        call()
    except Exception:
        if not model.hooks_seen or model.hooks_seen[-1] == 0:
            pytest.fail("the bad call raised before any E-GBAS hook existed")
        raise
    pytest.fail("a latent of the wrong size did not raise")


def _bad_attribute(method, model):
    _raises_with_hooks_live(
        lambda: method.attribute(_latents(0, 2, dim=7), n_steps=2), model
    )


def _bad_sample(method, model):
    _raises_with_hooks_live(
        lambda: method.sample(_latents(0, 1, dim=7), mask_kwargs={"n_steps": 2}),
        model,
    )


def _bad_epsilon(method, model):
    mask = torch.ones(16, 8, 8, dtype=torch.bool)
    _raises_with_hooks_live(
        lambda: method.epsilon_sample(_latents(0, 1, dim=7), mask=mask), model
    )


CASES = [
    Case(
        id="EGBAS-digits_generator-fc2-attribute",
        make_model=UndeclaredGenerator,
        layer="inner.fc2",
        make_method=EGBAS,
        call=_call_attribute,
        call_bad_selector=_bad_attribute,
        bad_call_errors=(RuntimeError,),
    ),
    Case(
        id="EGBAS-digits_generator-fc1-sample",
        make_model=UndeclaredGenerator,
        layer="inner.fc1",
        make_method=EGBAS,
        call=_call_sample,
        call_bad_selector=_bad_sample,
        bad_call_errors=(RuntimeError,),
    ),
    Case(
        id="EGBAS-digits_generator-deconv1-epsilon",
        make_model=UndeclaredGenerator,
        layer="inner.deconv1",
        make_method=EGBAS,
        call=_call_epsilon,
        call_bad_selector=_bad_epsilon,
        bad_call_errors=(RuntimeError,),
    ),
]
