"""NetworkDissection refuses bad input with a ValueError naming the argument.

One case per class of failure (issue 14): non-finite or meta inputs and
masks, numbers given as strings or NaN, non-integer units, non-finite
thresholds, names that are not strings, and an activation pass that cannot
fit in memory (refused up front instead of growing until the process dies).
"""

import pytest
import torch
from torch import nn

from captum_inverseset import NetworkDissection
from captum_inverseset._utils.hooks import count_hooks

N = 6


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU())


def _x():
    return torch.rand(N, 1, 4, 4, generator=torch.Generator().manual_seed(0))


def _masks():
    return torch.rand(N, 2, 4, 4, generator=torch.Generator().manual_seed(1)) > 0.5


def _nan_x():
    x = _x()
    x[2, 0, 0, 0] = float("nan")
    return x


def _run(model, layer, *args, **kwargs):
    # interpret() is the verb since issue 17; attribute() before it. The
    # fallback lets this file run on 35150b8, where issue 14 counts its cases.
    method = NetworkDissection(model, layer)
    verb = getattr(method, "interpret", None) or method.attribute
    return verb(*args, **kwargs)


CASES = [
    ("nan-inputs", _nan_x, {}, "inputs.*NaN or infinite"),
    ("meta-inputs", lambda: torch.empty(N, 1, 4, 4, device="meta"), {}, "inputs"),
    ("quantile-string", _x, {"quantile": "0.9"}, "quantile"),
    ("units-strings", _x, {"units": ["a"]}, "units"),
    ("units-floats", _x, {"units": [1.5]}, "units"),
    ("units-string", _x, {"units": "01"}, "units"),
    (
        "thresholds-nan",
        _x,
        {"thresholds": torch.tensor([0.1, float("nan"), 0.2])},
        "thresholds",
    ),
    ("thresholds-inf", _x, {"thresholds": [0.1, float("inf"), 0.2]}, "thresholds"),
    ("thresholds-strings", _x, {"thresholds": ["a", "b", "c"]}, "thresholds"),
    (
        "thresholds-meta",
        _x,
        {"thresholds": torch.empty(3, device="meta")},
        "thresholds",
    ),
    (
        "masks-meta",
        _x,
        {"concept_masks": torch.empty(N, 2, 4, 4, device="meta")},
        "concept_masks",
    ),
    ("concept-names-string", _x, {"concept_names": "ab"}, "concept_names"),
    ("concept-names-ints", _x, {"concept_names": [0, 1]}, "concept_names"),
]

REGRESSION = [
    ("quantile-nan", _x, {"quantile": float("nan")}, "quantile"),
    ("quantile-bool", _x, {"quantile": True}, "quantile"),
    ("batch-size-string", _x, {"batch_size": "2"}, "batch_size"),
    ("masks-not-binary", _x, {"concept_masks": torch.full((N, 2, 4, 4), 2)}, "binary"),
    (
        "masks-nan",
        _x,
        {"concept_masks": torch.full((N, 2, 4, 4), float("nan"))},
        "binary",
    ),
    ("units-out-of-range", _x, {"units": [7]}, "units"),
    ("quantile-one", _x, {"quantile": 1.0}, "quantile"),
]


@pytest.mark.parametrize(
    "make_inputs, kwargs, match",
    [c[1:] for c in CASES + REGRESSION],
    ids=[c[0] for c in CASES + REGRESSION],
)
def test_bad_input_raises_naming_the_argument(make_inputs, kwargs, match):
    model = _model().train()
    kwargs = dict(kwargs)
    masks = kwargs.pop("concept_masks", _masks())
    with pytest.raises(ValueError, match=match):
        _run(model, model[1], make_inputs(), masks, **kwargs)
    assert model.training and count_hooks(model) == 0


def test_threshold_pass_that_cannot_fit_is_refused_up_front(monkeypatch):
    # the pass keeps every activation (6 x 3 x 4 x 4 floats plus the sort):
    # with 1 KB of memory available it must refuse before the first pass
    import captum_inverseset._core.layer.network_dissection as module

    monkeypatch.setattr(module, "available_memory", lambda *a: 1024, raising=False)
    model = _model()
    with pytest.raises(ValueError, match="thresholds="):
        _run(model, model[1], _x(), _masks())
    # with the thresholds given there is no such pass
    _run(model, model[1], _x(), _masks(), thresholds=torch.zeros(3))


def test_meta_model_is_refused():
    model = _model().to("meta")
    with pytest.raises(ValueError, match="meta"):
        _run(model, model[1], _x(), _masks())
