"""Bad input to NeuronInverseSet: one case per class of failure (issue 14).

Every case must end in a clear error that names the offending argument (or,
for errors raised inside the user's own modules, in that error unchanged), and
must leave the model exactly as it was. The memory cases run in a child
process with a 4 GiB address-space limit and a time limit, so code that tries
to build ten million samples at once fails there instead of taking the
machine down.
"""

import json
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from typing import Callable, Optional, Tuple, Type, Union

import pytest
import torch
from torch import nn

from captum_inverseset import NeuronInverseSet
from captum_inverseset._utils.hooks import count_hooks

D = 6


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc1 = nn.Linear(D, 4)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(4, 2)
        self.unused = nn.Linear(2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.relu(self.fc1(x)))


class EncoderFailure(RuntimeError):
    """Raised by a user's encoder: must reach the caller unchanged."""


class FailingEncoder(nn.Module):
    def forward(self, x):
        raise EncoderFailure("the user's encoder failed")


class NaNEncoder(nn.Module):
    def forward(self, x):
        return x * float("nan")


class NaNGenerator(nn.Module):
    code_shape = (3,)

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, D)

    def forward(self, c):
        return self.lin(c) * float("nan")

    def random_codes(self, n, generator=None, device=None):
        return torch.randn(n, 3, generator=generator)


def _x(n: int = 3) -> torch.Tensor:
    return torch.rand(n, D, generator=torch.Generator().manual_seed(0))


def _sample(m: MLP, **kw):
    args = dict(n_samples=4, batch_size=2, input_shape=(D,), max_steps=3)
    args.update(kw)
    selector = args.pop("neuron_selector", 0)
    band = args.pop("activation_range", (0.0, 1.0))
    sampler = NeuronInverseSet(m, args.pop("layer", m.fc1), **args.pop("init", {}))
    return sampler.sample(selector, band, **args)


def _attribute(m: MLP, x: torch.Tensor, **kw):
    return NeuronInverseSet(m, m.fc1).attribute(
        x, 0, activation_range=(0.0, 1.0), max_steps=3, **kw
    )


def _meta_model(m: MLP):
    meta = MLP().to("meta")
    return NeuronInverseSet(meta, meta.fc1).sample(
        0, (0.0, 1.0), n_samples=2, input_shape=(D,), max_steps=2
    )


def _nan_init_codes(m: MLP):
    codes = torch.zeros(4, D)
    codes[1, 2] = float("nan")
    return _sample(m, init_codes=codes)


@dataclass
class Case:
    id: str
    failure_class: str
    call: Callable[[MLP], object]
    raises: Union[Type[BaseException], Tuple[Type[BaseException], ...]] = ValueError
    match: Optional[str] = None


CASES = [
    Case(
        "nan_inputs",
        "non-finite inputs",
        lambda m: _attribute(m, _x().index_fill(1, torch.tensor([2]), float("nan"))),
        match="inputs",
    ),
    Case(
        "nan_init_codes",
        "non-finite starting codes",
        _nan_init_codes,
        match="init_codes",
    ),
    Case(
        "init_codes_wrong_shape",
        "starting codes of the wrong shape",
        lambda m: _sample(m, init_codes=torch.zeros(4, D + 1)),
        match="init_codes",
    ),
    Case(
        "string_number_in_band",
        "numbers given as strings",
        lambda m: _sample(m, activation_range=("0.2", "0.6")),
        match="activation_range",
    ),
    Case(
        "string_number_option",
        "numbers given as strings (options)",
        lambda m: _sample(m, lr="0.1"),
        match="lr",
    ),
    Case(
        "string_sizes",
        "sizes given as strings",
        lambda m: _sample(m, input_shape=("6",)),
        match="input_shape must",
    ),
    Case(
        "fractional_sizes",
        "fractional sizes truncated",
        lambda m: _sample(m, input_shape=(6.5,)),
        match="input_shape must",
    ),
    Case(
        "string_flag",
        "strings where a bool belongs",
        lambda m: _sample(m, attribute_to_neuron_input="False"),
        match="attribute_to_neuron_input",
    ),
    Case(
        "bool_number",
        "bools where a number belongs",
        lambda m: _sample(m, lr=True),
        match="lr",
    ),
    Case(
        "infinite_weight",
        "infinite weights",
        lambda m: _sample(m, diversity_weight=float("inf")),
        match="diversity_weight",
    ),
    Case(
        "meta_inputs",
        "meta tensors",
        lambda m: _attribute(m, _x().to("meta")),
        match="inputs.*meta",
    ),
    Case("meta_model", "meta model", _meta_model, match="meta"),
    Case(
        "integer_inputs",
        "integer inputs",
        lambda m: _attribute(m, torch.ones(3, D, dtype=torch.long)),
        match="inputs.*floating",
    ),
    Case(
        "string_selector",
        "selector of the wrong type",
        lambda m: _sample(m, neuron_selector="0"),
        match="neuron_selector",
    ),
    Case(
        "encoder_error_unchanged",
        "errors of the user's modules relabelled",
        lambda m: _sample(m, init={"encoder": FailingEncoder()}),
        raises=EncoderFailure,
        match="user's encoder failed",
    ),
    Case(
        "nonfinite_encoder",
        "non-finite encodings",
        lambda m: _sample(m, init={"encoder": NaNEncoder()}),
        match="encoder",
    ),
    Case(
        "layer_not_called",
        "layer not run by the model",
        lambda m: _sample(m, layer=m.unused),
        match="not called",
    ),
    Case(
        "nan_data",
        "non-finite data",
        lambda m: _sample(m, data=_x(8).index_fill(0, torch.tensor([3]), float("inf"))),
        match="data",
    ),
    Case(
        "string_spread_steps",
        "counts given as strings",
        lambda m: _sample(m, spread_steps="20"),
        match="spread_steps",
    ),
    Case(
        "negative_screen",
        "negative counts",
        lambda m: _sample(m, screen=-5),
        match="screen",
    ),
    # Already refused on 35150b8: kept as regression tests.
    Case(
        "multi_value_selector",
        "selector of several values",
        lambda m: _sample(m, neuron_selector=lambda out: out),
        match="one value per example",
    ),
    Case(
        "out_of_range_selector",
        "out-of-range selector",
        lambda m: _sample(m, neuron_selector=99),
        raises=(AssertionError, IndexError),
    ),
    Case(
        "nan_band",
        "NaN band",
        lambda m: _sample(m, activation_range=(float("nan"), 1.0)),
        match="activation_range",
    ),
    Case(
        "nonfinite_generator",
        "non-finite generator outputs",
        lambda m: _sample(m, init={"generator": NaNGenerator()}, input_shape=None),
        match="generator",
    ),
    Case(
        "zero_count",
        "non-positive counts",
        lambda m: _sample(m, n_samples=0),
        match="n_samples",
    ),
    Case(
        "string_seed",
        "seed of the wrong type",
        lambda m: _sample(m, seed="0"),
        match="seed",
    ),
]

# Cases that 35150b8 (the main before this session) already refused clearly.
REGRESSION = {
    "nan_inputs",
    "multi_value_selector",
    "out_of_range_selector",
    "nan_band",
    "nonfinite_generator",
    "zero_count",
    "string_seed",
}


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_input(case: Case):
    model = MLP()
    model.train()
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(case.raises, match=case.match):
        case.call(model)
    assert count_hooks(model) == 0
    assert model.training and all(sub.training for sub in model.modules())
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert all(p.requires_grad for p in model.parameters())


# ---------------------------------------------------------------- memory

_MEMORY_CHILD = textwrap.dedent(
    """
    import json, resource, sys, time
    limit = 4 * 2**30
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    import torch
    torch.set_num_threads(1)
    from captum_inverseset import NeuronInverseSet
    from captum_inverseset.zoo import digits_classifier, digits_generator

    model = digits_classifier()
    case = sys.argv[1]
    # ru_maxrss survives fork and exec (a big parent shows here): measure growth.
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    try:
        if case == "batch":
            NeuronInverseSet(model, model.fc1, generator=digits_generator()).sample(
                3, (1.0, 2.0), n_samples=10**7, batch_size=10**7
            )
        elif case == "results":
            NeuronInverseSet(model, model.fc1, generator=digits_generator()).sample(
                3, (1.0, 2.0), n_samples=10**10, batch_size=10
            )
        elif case == "top_range":
            NeuronInverseSet(model, model.fc1).top_range(
                3, input_shape=(1, 8, 8), n_starts=10**7
            )
        outcome = {"error": None}
    except BaseException as err:  # reported to the parent, which judges it
        outcome = {"error": type(err).__name__, "message": str(err)}
    outcome["seconds"] = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    outcome["growth_mb"] = peak - base
    print(json.dumps(outcome))
    """
)


@pytest.mark.parametrize(
    "case, argument",
    [("batch", "batch_size"), ("results", "n_samples"), ("top_range", "n_starts")],
)
def test_memory_guard_refuses_up_front(case, argument):
    env = dict(
        os.environ,
        PYTHONPATH=os.getcwd() + os.pathsep + os.environ.get("PYTHONPATH", ""),
    )
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _MEMORY_CHILD, case],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"{case}: still running after 120 s instead of refusing up front")
    assert proc.returncode == 0, proc.stderr[-2000:]
    outcome = json.loads(proc.stdout.strip().splitlines()[-1])
    assert outcome["error"] == "ValueError", outcome
    assert argument in outcome["message"] and "memory" in outcome["message"]
    # Seconds, not the hours (and GBs) of building the batch; a loaded
    # machine is slow to start a process.
    assert outcome["seconds"] < 60, outcome
    assert outcome["growth_mb"] < 1024, outcome
