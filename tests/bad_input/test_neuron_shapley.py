"""NeuronShapley with bad input: one case per class of failure (issue 14).

Every case asserts the behaviour a careful user is owed: a ``ValueError`` or
``TypeError`` naming what is wrong (never garbage values, never an internal
error), or, for inputs that are valid (models returning tuples or dicts, a
metric returning a plain number), values equal to the plain case. After
each case the model is as it was (parameters, buffers, flags, hooks).
"""

import os
import signal
import socket
import subprocess
import sys

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from captum_inverseset import NeuronShapley
from captum_inverseset._utils.hooks import count_hooks

from ..layer._shapley_models import make_mlp

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CASES = {}


def case(fn):
    CASES[fn.__name__] = fn
    return fn


def _data(n=24, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, generator=g), torch.randint(0, 3, (n,), generator=g)


def _run(model, x, **kw):
    kw = {"n_permutations": 4, "seed": 0, "metric": "loss", **kw}
    return NeuronShapley(model, model.relu).attribute(x, **kw)


def _raises(exc, match, fn):
    with pytest.raises(exc, match=match):
        fn()


# -- non-finite inputs -------------------------------------------------------
@case
def nan_in_inputs(model, tmp_path):
    x, y = _data()
    x[3, 1] = float("nan")
    _raises(ValueError, "inputs", lambda: _run(model, x, target=y))


@case
def inf_in_second_input_tensor(model, tmp_path):
    class TwoInputs(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = model
            self.relu = model.relu

        def forward(self, a, b):
            return self.inner(a + b)

    two = TwoInputs()
    x, y = _data()
    b = torch.zeros_like(x)
    b[0, 0] = float("inf")
    _raises(
        ValueError,
        "inputs",
        lambda: NeuronShapley(two, two.relu).attribute(
            (x, b), target=y, n_permutations=2
        ),
    )


@case
def nan_in_a_dataloader_batch(model, tmp_path):
    x, y = _data()
    x[20, 0] = float("nan")
    loader = DataLoader(TensorDataset(x, y), batch_size=8)
    _raises(ValueError, "inputs", lambda: _run(model, loader))


@case
def meta_tensor_inputs(model, tmp_path):
    x = torch.empty(8, 3, device="meta")
    _raises(ValueError, "inputs", lambda: _run(model, x))


@case
def layer_output_not_finite_on_finite_inputs(model, tmp_path):
    class Overflow(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = model
            self.relu = model.relu

        def forward(self, x):
            return self.inner.fc2(self.relu(self.inner.fc1(x) * 1e38 * 1e38))

    over = Overflow()
    x, y = _data()
    _raises(
        ValueError,
        "NaN or infinite",
        lambda: NeuronShapley(over, over.relu).attribute(
            x, target=y, n_permutations=2, metric=lambda o, t: o.clamp(-1, 1).mean()
        ),
    )


# -- targets -----------------------------------------------------------------
@case
def target_out_of_range(model, tmp_path):
    x, _ = _data()
    _raises(ValueError, "target.*99", lambda: _run(model, x, target=99))


@case
def fractional_float_labels(model, tmp_path):
    x, y = _data()
    labels = y.float()
    labels[0] = 1.7
    _raises(ValueError, "target", lambda: _run(model, x, target=labels))


@case
def float_scalar_target(model, tmp_path):
    x, _ = _data()
    _raises(ValueError, "target", lambda: _run(model, x, target=1.7))


@case
def bool_target(model, tmp_path):
    x, _ = _data()
    _raises(ValueError, "target", lambda: _run(model, x, target=True))


@case
def negative_labels(model, tmp_path):
    x, y = _data()
    _raises(ValueError, "target", lambda: _run(model, x, target=y - 1))


@case
def target_of_wrong_shape(model, tmp_path):
    x, y = _data()
    _raises(ValueError, "target", lambda: _run(model, x, target=y[:, None]))


@case
def dataloader_labels_out_of_range(model, tmp_path):
    x, y = _data()
    loader = DataLoader(TensorDataset(x, y + 5), batch_size=8)
    _raises(ValueError, "target", lambda: _run(model, loader))


@case
def dataloader_fractional_labels(model, tmp_path):
    x, y = _data()
    loader = DataLoader(TensorDataset(x, y.float() + 0.5), batch_size=8)
    _raises(ValueError, "target", lambda: _run(model, loader))


@case
def metric_class_out_of_range(model, tmp_path):
    x, y = _data()
    _raises(
        ValueError,
        "metric_class=99 is not a class",
        lambda: _run(model, x, target=y, metric="class_accuracy", metric_class=99),
    )


# -- model outputs and metric values -----------------------------------------
class _Structured(nn.Module):
    def __init__(self, model, kind):
        super().__init__()
        self.inner, self.relu, self.kind = model, model.relu, kind

    def forward(self, x):
        out = self.inner(x)
        if self.kind == "tuple":
            return out, out.sum(1)
        return {"logits": out, "aux": out.sum(1)}


@case
def model_returning_a_tuple_with_a_callable_metric(model, tmp_path):
    x, y = _data()
    wrapped = _Structured(model, "tuple")

    def metric(out, target):
        logits, aux = out
        assert aux.shape == (logits.shape[0],)
        return -nn.functional.cross_entropy(logits, target)

    got = NeuronShapley(wrapped, wrapped.relu).attribute(
        x, target=y, metric=metric, exact=True
    )
    expected = NeuronShapley(model, model.relu).attribute(
        x, target=y, metric="loss", exact=True
    )
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)


@case
def model_returning_a_dict_with_a_callable_metric(model, tmp_path):
    x, y = _data()
    wrapped = _Structured(model, "dict")
    got = NeuronShapley(wrapped, wrapped.relu).attribute(
        x,
        target=y,
        metric=lambda out, t: -nn.functional.cross_entropy(out["logits"], t),
        exact=True,
    )
    expected = NeuronShapley(model, model.relu).attribute(
        x, target=y, metric="loss", exact=True
    )
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)


@case
def builtin_metric_on_a_tuple_output(model, tmp_path):
    x, y = _data()
    wrapped = _Structured(model, "tuple")
    _raises(
        ValueError,
        "logits tensor",
        lambda: NeuronShapley(wrapped, wrapped.relu).attribute(
            x, target=y, n_permutations=2
        ),
    )


@case
def metric_returning_none(model, tmp_path):
    x, y = _data()
    _raises(TypeError, "metric", lambda: _run(model, x, metric=lambda o, t: None))


@case
def metric_returning_a_string(model, tmp_path):
    x, y = _data()
    _raises(TypeError, "metric", lambda: _run(model, x, metric=lambda o, t: "0.5"))


@case
def metric_returning_a_python_number(model, tmp_path):
    x, y = _data()
    got = _run(model, x, target=y, metric=lambda o, t: float(o[:, 0].mean()))
    expected = _run(model, x, target=y, metric=lambda o, t: o[:, 0].mean())
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)


# -- number arguments ----------------------------------------------------------
@case
def infinite_truncation_tolerance(model, tmp_path):
    x, y = _data()
    _raises(
        ValueError,
        "truncation_tolerance",
        lambda: _run(model, x, target=y, truncation_tolerance=float("inf")),
    )


@case
def infinite_bandit_tolerance(model, tmp_path):
    x, y = _data()
    _raises(
        ValueError,
        "bandit_tolerance",
        lambda: _run(model, x, target=y, top_k=2, bandit_tolerance=float("inf")),
    )


@case
def number_given_as_a_string(model, tmp_path):
    x, y = _data()
    _raises(ValueError, "n_permutations", lambda: _run(model, x, n_permutations="5"))


@case
def round_too_large_for_memory(model, tmp_path):
    x, y = _data()
    _raises(
        ValueError,
        "permutations_per_round",
        lambda: _run(
            model,
            x,
            target=y,
            n_permutations=10**12,
            permutations_per_round=10**12,
            coalitions_per_batch=10**12,
        ),
    )


@case
def pass_too_large_for_memory(model, tmp_path):
    x, y = _data(n=2000)
    _raises(
        ValueError,
        "coalitions_per_batch",
        lambda: _run(
            model,
            x,
            target=y,
            n_permutations=10**7,
            permutations_per_round=10**7,
            coalitions_per_batch=10**9,
        ),
    )


# -- checkpoints ---------------------------------------------------------------
def _ckpt_run(model, x, y, ckpt, layer=None, **kw):
    kw = {"n_permutations": 8, "seed": 0, "metric": "loss", **kw}
    ns = NeuronShapley(model, layer if layer is not None else model.relu)
    return ns.attribute(x, target=y, checkpoint=str(ckpt), **kw)


def _refused(model, ckpt, part, first, second):
    """A checkpoint written by ``first`` is refused by ``second``, and the
    error names ``part`` as what differs."""
    first()
    assert os.path.exists(ckpt)
    _raises(ValueError, f"differing: .*{part}", second)


@case
def checkpoint_of_other_weights(model, tmp_path):
    x, y = _data()
    ckpt = tmp_path / "c.ckpt"
    other = make_mlp(seed=5)
    _refused(
        model, ckpt, "model",
        lambda: _ckpt_run(model, x, y, ckpt),
        lambda: _ckpt_run(other, x, y, ckpt),
    )  # fmt: skip


@case
def checkpoint_of_other_labels(model, tmp_path):
    x, y = _data()
    ckpt = tmp_path / "c.ckpt"
    _refused(
        model, ckpt, "target",
        lambda: _ckpt_run(model, x, y, ckpt),
        lambda: _ckpt_run(model, x, (y + 1) % 3, ckpt),
    )  # fmt: skip


@case
def checkpoint_of_another_layer_of_the_same_width(model, tmp_path):
    x, y = _data()
    ckpt = tmp_path / "c.ckpt"
    _refused(
        model, ckpt, "layers",
        lambda: _ckpt_run(model, x, y, ckpt),
        lambda: _ckpt_run(model, x, y, ckpt, layer=model.fc1),
    )  # fmt: skip


@case
def checkpoint_of_inputs_with_two_pixels_swapped(model, tmp_path):
    x, y = _data()
    ckpt = tmp_path / "c.ckpt"
    swapped = x.clone()
    swapped[0, 0], swapped[0, 1] = x[0, 1], x[0, 0]
    _refused(
        model, ckpt, "inputs",
        lambda: _ckpt_run(model, x, y, ckpt),
        lambda: _ckpt_run(model, swapped, y, ckpt),
    )  # fmt: skip


@case
def checkpoint_of_another_callable_metric(model, tmp_path):
    x, y = _data()
    ckpt = tmp_path / "c.ckpt"
    _refused(
        model, ckpt, "checkpoint_key",
        lambda: _ckpt_run(model, x, y, ckpt, metric=lambda o, t: o[:, 0].abs().mean(),
                          checkpoint_key="mean logit 0"),
        lambda: _ckpt_run(model, x, y, ckpt, metric=lambda o, t: o[:, 1].abs().mean(),
                          checkpoint_key="mean logit 1"),
    )  # fmt: skip


@case
def checkpoint_with_a_callable_metric_and_no_key(model, tmp_path):
    x, y = _data()
    _raises(
        ValueError,
        "checkpoint_key",
        lambda: _ckpt_run(model, x, y, tmp_path / "c", metric=lambda o, t: o.mean()),
    )


@case
def checkpoint_with_seed_none(model, tmp_path):
    x, y = _data()
    _raises(
        ValueError,
        "cannot be resumed",
        lambda: _ckpt_run(model, x, y, tmp_path / "c", seed=None),
    )


@case
def checkpoint_edited_by_hand(model, tmp_path):
    x, y = _data()
    ckpt = tmp_path / "c.ckpt"
    _ckpt_run(model, x, y, ckpt, n_permutations=4, permutations_per_round=4,
              checkpoint_every=4)  # fmt: skip
    payload = torch.load(ckpt, weights_only=True)
    payload["sums"][1] = float("nan")
    torch.save(payload, ckpt)
    _raises(
        ValueError,
        "checkpoint",
        lambda: _ckpt_run(model, x, y, ckpt, n_permutations=4,
                          permutations_per_round=4, checkpoint_every=4),
    )  # fmt: skip


@case
def checkpoint_with_statistics_of_the_wrong_shape(model, tmp_path):
    from captum_inverseset._core.layer.neuron_shapley import checkpoint as ck

    x, y = _data()
    ckpt = tmp_path / "c.ckpt"
    kw = dict(n_permutations=4, permutations_per_round=4, checkpoint_every=4)
    _ckpt_run(model, x, y, ckpt, **kw)
    payload = torch.load(ckpt, weights_only=True)
    state = {
        k: v
        for k, v in payload.items()
        if k not in ("format_version", "fingerprint", "state_digest")
    }
    state["counts"] = state["counts"][:3]
    ck.save_checkpoint(str(ckpt), payload["fingerprint"], state)
    _raises(ValueError, "corrupt.*counts", lambda: _ckpt_run(model, x, y, ckpt, **kw))


@case
def checkpoint_writer_and_foreign_temporary_files(model, tmp_path):
    x, y = _data()
    ckpt = tmp_path / "c.ckpt"
    foreign = [tmp_path / "c.ckpt.tmp.mine", tmp_path / "c.ckpt.tmp.12345"]
    for f in foreign:
        f.write_text("not yours")
    _ckpt_run(model, x, y, ckpt, permutations_per_round=4, checkpoint_every=4)
    assert all(f.read_text() == "not yours" for f in foreign)


# -- distributed: ranks must run the same game from the same state -----------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_ranks(tmp_path, *args):
    out = tmp_path / "out.json"
    port = _free_port()
    procs = []
    for rank in range(2):
        env = dict(
            os.environ, PYTHONPATH=REPO, RANK=str(rank), WORLD_SIZE="2",
            LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
        )  # fmt: skip
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "tests.layer._shapley_worker", str(out), *args],
                cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            )  # fmt: skip
        )
    codes = []
    for p in procs:
        try:
            codes.append(p.wait(timeout=60))
        except subprocess.TimeoutExpired:
            p.send_signal(signal.SIGKILL)
            codes.append(p.wait())
    errors = []
    for rank in range(2):
        err = tmp_path / f"out.json.rank{rank}.err"
        errors.append(err.read_text() if err.exists() else "")
    return codes, errors, out


@case
def distributed_ranks_with_different_seeds(model, tmp_path):
    codes, errors, out = _two_ranks(tmp_path, "--seed-per-rank")
    assert codes == [1, 1], (codes, errors)
    assert all("seed differs between ranks" in e for e in errors), errors
    assert not out.exists()


@case
def distributed_ranks_resuming_different_checkpoints(model, tmp_path):
    # rank 0 finds a finished node-local checkpoint, rank 1 none
    from ..layer._shapley_worker import run

    run(checkpoint=str(tmp_path / "ns.rank0.ckpt"))
    before = (tmp_path / "ns.rank0.ckpt").read_bytes()
    codes, errors, out = _two_ranks(
        tmp_path, "--checkpoint", str(tmp_path / "ns.rank{rank}.ckpt")
    )
    assert codes == [1, 1], (codes, errors)
    assert all("different checkpoint states" in e for e in errors), errors
    assert (tmp_path / "ns.rank0.ckpt").read_bytes() == before
    assert not (tmp_path / "ns.rank1.ckpt").exists()
    assert not out.exists()


# -- the runner ------------------------------------------------------------------
def _state(model):
    return (
        [(n, p.detach().clone()) for n, p in model.named_parameters()],
        [(n, b.detach().clone()) for n, b in model.named_buffers()],
        [m.training for m in model.modules()],
        [p.requires_grad for p in model.parameters()],
        count_hooks(model),
    )


def _same_state(a, b):
    assert [n for n, _ in a[0]] == [n for n, _ in b[0]]
    assert all(torch.equal(x, y) for (_, x), (_, y) in zip(a[0], b[0]))
    assert all(torch.equal(x, y) for (_, x), (_, y) in zip(a[1], b[1]))
    assert a[2:] == b[2:]


@pytest.fixture
def _time_limit():
    """A case that would loop for minutes (an unbounded allocation) fails
    after 60 s instead of hanging the suite."""

    def stop(signum, frame):
        raise TimeoutError("the case ran for more than 60 s")

    previous = signal.signal(signal.SIGALRM, stop)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input(name, tmp_path, _time_limit):
    model = make_mlp()
    model.train()  # an unusual state that a method must restore
    before = _state(model)
    CASES[name](model, tmp_path)
    _same_state(before, _state(model))
