"""Bad input to :class:`~captum_inverseset.EGBAS`, one case per failure class.

Every case must end in a clear error naming the argument (``REFUSED``), or
work where the old code failed obscurely (``ACCEPTED``), and leave the
generator as it was. Only the public API is imported, and the generators are
defined here, so the module also runs against older versions of the package.
"""

from dataclasses import dataclass
from typing import Any, Callable, Optional, Type

import pytest
import torch
from torch import nn

from captum_inverseset import EGBAS

LATENT = 4
UNITS = 16


class Declared(nn.Module):
    """Latent (4,) -> (6,), declares ``latent_dim`` as the zoo's models do."""

    latent_dim = LATENT

    def __init__(self, out_features: int = 6) -> None:
        super().__init__()
        self.fc1 = nn.Linear(LATENT, UNITS)
        self.act = nn.ReLU()
        self.out = nn.Linear(UNITS, out_features)

    def forward(self, z):
        return self.out(self.act(self.fc1(z)))


class Undeclared(Declared):
    """The same network without a declared latent shape."""

    latent_dim = None


class Failing(Declared):
    """Raises its own error after the layer ran (e.g. out of memory)."""

    def __init__(self, error: Exception) -> None:
        super().__init__()
        self.error = error

    def forward(self, z):
        self.fc1(z)
        raise self.error


class Unused(Declared):
    """``unused`` is a submodule that the forward never calls."""

    def __init__(self) -> None:
        super().__init__()
        self.unused = nn.Linear(LATENT, UNITS)


@dataclass
class Ctx:
    gen: nn.Module
    egbas: EGBAS
    z0: torch.Tensor
    mask: torch.Tensor


@pytest.fixture
def ctx():
    torch.manual_seed(0)
    gen = Declared().eval()
    z0 = torch.randn(1, LATENT, generator=torch.Generator().manual_seed(0))
    return Ctx(gen, EGBAS(gen, gen.fc1), z0, torch.ones(UNITS, dtype=torch.bool))


def _nan(x: torch.Tensor) -> torch.Tensor:
    x = x.clone()
    x.view(-1)[0] = float("nan")
    return x


def _big_output():
    # 12288 outputs per latent (a 3x64x64 image): 10**8 samples need ~5 TB.
    gen = Declared(out_features=3 * 64 * 64).eval()
    return gen, EGBAS(gen, gen.fc1)


def _epsilon_huge_n(c):
    gen, egbas = _big_output()
    egbas.epsilon_sample(c.z0, n_samples=10**8, epsilon=0.1, mask=c.mask)


def _sample_huge_n(c):
    gen, egbas = _big_output()
    egbas.sample(c.z0, n_samples=10**8, mask=c.mask, max_iterations=3)


def _on_meta(c):
    gen = Declared().to("meta")
    EGBAS(gen, gen.fc1)


@dataclass
class Case:
    id: str
    call: Callable[[Ctx], Any]
    error: Type[BaseException]
    match: Optional[str]


S, E, C, A = "sample", "epsilon_sample", "calibrate_epsilon", "attribute"


def _kw(method: str, **kwargs) -> Callable[[Ctx], Any]:
    """``egbas.<method>(z0, mask=mask, **kwargs)`` with small budgets."""

    def call(c: Ctx):
        budget = {"n_samples": 8} if method in (S, E) else {}
        if method == A:
            return c.egbas.attribute(c.z0, **{"n_steps": 2, **kwargs})
        if method == C:
            budget = {"n_samples": 16, "iterations": 2}
        if method in (S, E, C) and "mask" not in kwargs:
            kwargs["mask"] = c.mask
        return getattr(c.egbas, method)(c.z0, **{**budget, **kwargs})

    return call


REFUSED = [
    # -- errors raised inside the generator propagate unchanged ---------------
    Case(
        "generator_runtime_error_propagates",
        lambda c: EGBAS(g := Failing(RuntimeError("simulated oom")), g.fc1).sample(
            c.z0, mask=c.mask
        ),
        RuntimeError,
        "simulated oom",
    ),
    Case(
        "generator_type_error_propagates",
        lambda c: EGBAS(g := Failing(TypeError("simulated type")), g.fc1).attribute(
            c.z0, n_steps=1
        ),
        TypeError,
        "simulated type",
    ),
    Case(
        "undeclared_latent_shape_model_error_propagates",
        lambda c: EGBAS(g := Undeclared(), g.fc1).sample(
            torch.randn(1, 5), mask=c.mask
        ),
        RuntimeError,
        "cannot be multiplied",
    ),
    # -- latents of the wrong shape, checked against the declared one --------
    Case(
        "latent_wrong_size",
        lambda c: c.egbas.sample(torch.randn(1, 5), mask=c.mask),
        ValueError,
        "z0",
    ),
    Case(
        "several_queries_as_z0",
        lambda c: c.egbas.sample(torch.randn(3, LATENT), mask=c.mask),
        ValueError,
        "z0",
    ),
    Case(
        "queries_wrong_size",
        lambda c: c.egbas.attribute(torch.randn(2, 5), n_steps=1),
        ValueError,
        "inputs",
    ),
    Case(
        "no_queries",
        lambda c: c.egbas.attribute(torch.randn(0, LATENT), n_steps=1),
        ValueError,
        "inputs",
    ),
    Case(
        "z0_not_tensor",
        lambda c: c.egbas.sample([0.0] * LATENT, mask=c.mask),
        ValueError,
        "z0 must be a tensor",
    ),
    Case(
        "z0_integer",
        lambda c: c.egbas.sample(torch.zeros(1, LATENT, dtype=torch.long)),
        ValueError,
        "z0 must be a floating",
    ),
    # -- strings, bools where numbers belong ---------------------------------
    Case("str_sparsity", _kw(A, sparsity="0.05"), ValueError, "sparsity"),
    Case("str_init_keep", _kw(A, init_keep="0.9"), ValueError, "init_keep"),
    Case("str_step_size", _kw(S, step_size="0.25"), ValueError, "step_size"),
    Case("str_epsilon", _kw(E, epsilon="0.1"), ValueError, "epsilon"),
    Case("str_n_samples", _kw(S, n_samples="8"), ValueError, "n_samples"),
    Case(
        "str_threshold",
        lambda c: c.egbas.supporting_boundaries(c.z0, threshold="0.5", n_steps=1),
        ValueError,
        "threshold",
    ),
    Case(
        "str_target_acceptance",
        _kw(C, target_acceptance="0.9"),
        ValueError,
        "target_acceptance",
    ),
    Case(
        "str_epsilon_range",
        _kw(C, epsilon_range=("0.001", "20")),
        ValueError,
        "epsilon_range",
    ),
    Case("str_latent_bound", _kw(S, latent_bound="3"), ValueError, "latent_bound"),
    Case("str_seed", _kw(S, seed="0"), ValueError, "seed"),
    Case("str_show_progress", _kw(S, show_progress="no"), ValueError, "show_progress"),
    Case("bool_sparsity", _kw(A, sparsity=True), ValueError, "sparsity"),
    Case("bool_n_samples", _kw(E, n_samples=True), ValueError, "n_samples"),
    # -- NaN and infinities ---------------------------------------------------
    Case("nan_z0", lambda c: c.egbas.sample(_nan(c.z0), mask=c.mask), ValueError, "z0"),
    Case(
        "nan_queries",
        lambda c: c.egbas.attribute(_nan(torch.randn(3, LATENT)), n_steps=1),
        ValueError,
        "inputs",
    ),
    Case("nan_sparsity", _kw(A, sparsity=float("nan")), ValueError, "sparsity"),
    Case("inf_sparsity", _kw(A, sparsity=float("inf")), ValueError, "sparsity"),
    Case("nan_step_size", _kw(S, step_size=float("nan")), ValueError, "step_size"),
    Case("inf_epsilon", _kw(E, epsilon=float("inf")), ValueError, "epsilon"),
    Case(
        "nan_target_acceptance",
        _kw(C, target_acceptance=float("nan")),
        ValueError,
        "target_acceptance",
    ),
    Case(
        "nan_latent_bound",
        _kw(S, latent_bound=float("nan")),
        ValueError,
        "latent_bound",
    ),
    Case(
        "nan_mask",
        lambda c: c.egbas.sample(c.z0, mask=_nan(torch.ones(UNITS))),
        ValueError,
        "mask",
    ),
    # -- out-of-range values --------------------------------------------------
    Case("zero_n_samples", _kw(S, n_samples=0), ValueError, "n_samples"),
    Case("negative_sparsity", _kw(A, sparsity=-1.0), ValueError, "sparsity"),
    Case("init_keep_one", _kw(A, init_keep=1.0), ValueError, "init_keep"),
    Case(
        "threshold_one",
        lambda c: c.egbas.supporting_boundaries(c.z0, threshold=1.0, n_steps=1),
        ValueError,
        "threshold",
    ),
    Case("zero_halvings", _kw(S, n_step_halvings=0), ValueError, "n_step_halvings"),
    Case(
        "target_acceptance_above_one",
        _kw(C, target_acceptance=1.5),
        ValueError,
        "target_acceptance",
    ),
    Case(
        "epsilon_range_decreasing",
        _kw(C, epsilon_range=(2.0, 1.0)),
        ValueError,
        "epsilon_range",
    ),
    Case(
        "epsilon_range_not_a_pair",
        _kw(C, epsilon_range=(2.0,)),
        ValueError,
        "epsilon_range",
    ),
    Case(
        "latent_bound_unknown", _kw(S, latent_bound="prior"), ValueError, "latent_bound"
    ),
    Case(
        "latent_bound_excludes_z0",
        _kw(S, latent_bound=1e-3),
        ValueError,
        "latent_bound",
    ),
    # -- masks ----------------------------------------------------------------
    Case(
        "mask_wrong_shape",
        lambda c: c.egbas.sample(c.z0, mask=torch.ones(UNITS - 1, dtype=torch.bool)),
        ValueError,
        "mask",
    ),
    Case(
        "mask_not_binary",
        lambda c: c.egbas.sample(c.z0, mask=torch.full((UNITS,), 0.5)),
        ValueError,
        "mask",
    ),
    Case(
        "mask_list",
        lambda c: c.egbas.sample(c.z0, mask=[True] * UNITS),
        ValueError,
        "mask",
    ),
    Case(
        "mask_kwargs_not_dict",
        _kw(S, mask=None, mask_kwargs=[("n_steps", 2)]),
        ValueError,
        "mask_kwargs",
    ),
    Case(
        "mask_kwargs_unknown",
        _kw(S, mask=None, mask_kwargs={"sparsityy": 0.1}),
        TypeError,
        "sparsityy",
    ),
    # -- meta tensors and models ----------------------------------------------
    Case(
        "meta_z0",
        lambda c: c.egbas.sample(torch.zeros(1, LATENT, device="meta"), mask=c.mask),
        ValueError,
        "z0",
    ),
    Case(
        "meta_queries",
        lambda c: c.egbas.attribute(torch.zeros(2, LATENT, device="meta")),
        ValueError,
        "inputs",
    ),
    Case(
        "meta_mask",
        lambda c: c.egbas.sample(
            c.z0, mask=torch.ones(UNITS, dtype=torch.bool, device="meta")
        ),
        ValueError,
        "mask",
    ),
    Case("meta_generator", _on_meta, ValueError, "meta"),
    # -- memory: refused up front, never grown into ---------------------------
    Case("epsilon_sample_huge_n_samples", _epsilon_huge_n, ValueError, "n_samples"),
    Case("sample_huge_n_samples", _sample_huge_n, ValueError, "n_samples"),
    # -- layers -----------------------------------------------------------------
    Case(
        "layer_not_submodule",
        lambda c: EGBAS(c.gen, nn.Linear(LATENT, UNITS)),
        ValueError,
        "layer",
    ),
    Case("layer_unknown_name", lambda c: EGBAS(c.gen, "fc9"), ValueError, "layer"),
    Case(
        "layer_never_called",
        lambda c: EGBAS(g := Unused(), g.unused).sample(c.z0, mask=c.mask),
        ValueError,
        "layer was not called",
    ),
    # -- results ----------------------------------------------------------------
    Case(
        "plot_kind_unknown",
        lambda c: c.egbas.sample(c.z0, n_samples=4, mask=c.mask).plot(kind="nope"),
        ValueError,
        "kind",
    ),
]


@pytest.mark.parametrize("case", REFUSED, ids=lambda c: c.id)
def test_refused_clearly(case, ctx):
    before = {k: v.clone() for k, v in ctx.gen.state_dict().items()}
    with pytest.raises(case.error, match=case.match):
        case.call(ctx)
    for k, v in ctx.gen.state_dict().items():
        assert torch.equal(v, before[k])
    assert not ctx.gen._forward_hooks and not ctx.gen.fc1._forward_hooks


def _float64_query(c):
    res = c.egbas.sample(c.z0.double(), n_samples=5, mask=c.mask, step_size=0.1)
    assert res.latents.dtype == torch.float32 and res.complete


def _huge_batch_size(c):
    # The candidates of one pass are bounded by what the tree can use, or the
    # request is refused up front with a message naming batch_size.
    try:
        res = c.egbas.sample(c.z0, n_samples=5, mask=c.mask, batch_size=10**8)
    except ValueError as err:
        assert "batch_size" in str(err)
    else:
        assert res.complete


def _epsilon_huge_batch_size(c):
    res = c.egbas.epsilon_sample(c.z0, n_samples=5, mask=c.mask, batch_size=10**8)
    assert res.latents.shape == (5, LATENT)


ACCEPTED = [
    Case("float64_query_cast_to_generator_dtype", _float64_query, None, None),
    Case("sample_huge_batch_size", _huge_batch_size, None, None),
    Case("epsilon_huge_batch_size", _epsilon_huge_batch_size, None, None),
]


@pytest.mark.parametrize("case", ACCEPTED, ids=lambda c: c.id)
def test_accepted(case, ctx):
    case.call(ctx)
