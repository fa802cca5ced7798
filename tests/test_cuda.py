"""The same checks on a CUDA device (skipped where there is none).

CI has no GPU; these run where one is lent (see ``docs/benchmarks.rst``):

    python -m pytest -q tests/test_cuda.py
"""

import pytest
import torch

from captum_inverseset import NeuronShapley
from captum_inverseset.demo import run_demo
from captum_inverseset.param import (
    BoxParameterization,
    FFTImageParameterization,
    PixelImageParameterization,
)
from captum_inverseset.zoo import digits_classifier, load_digits_dataset

from .conformance.config import CASES
from .conformance.harness import ALL_CHECKS

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA")
CUDA = torch.device("cuda")


@pytest.mark.parametrize("check", ALL_CHECKS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_conformance_on_cuda(case, check):
    check(case, device=CUDA)


@pytest.mark.parametrize("incremental", [False, True])
def test_neuron_shapley_cuda_matches_cpu(incremental):
    """The same permutations give the same values on both devices."""
    data = load_digits_dataset()
    x, y = data.test_inputs[:300], data.test_labels[:300]
    values = []
    for device in ("cpu", "cuda"):
        model = digits_classifier().to(device).eval()
        ns = NeuronShapley(model, [model.conv2, model.conv3])
        out = ns.attribute(
            x.to(device), target=y.to(device), metric="loss", n_permutations=3,
            seed=0, engine="incremental" if incremental else "segments",
        )  # fmt: skip
        assert all(v.device.type == device for v in out)
        values.append(torch.cat([v.cpu() for v in out]))
    assert torch.allclose(values[0], values[1], atol=1e-4), (
        (values[0] - values[1]).abs().max()
    )


def test_demo_on_cuda(tmp_path):
    summary = run_demo(tmp_path, device=CUDA, quick=True, show_progress=False)
    assert summary is not None
    assert (tmp_path / "index.html").exists()


@pytest.mark.parametrize(
    "make",
    [
        lambda: FFTImageParameterization((3, 16, 16)),
        lambda: PixelImageParameterization((3, 8, 8)),
        lambda: BoxParameterization((1, 8, 8), 0.0, 16.0),
    ],
    ids=["fft", "pixel", "box"],
)
def test_cpu_parameterization_serves_cuda_codes(make):
    """A parameterization built on the CPU maps CUDA codes without .to()."""
    param = make()
    codes = param.random_codes(2, generator=torch.Generator().manual_seed(0))
    out = param(codes.to(CUDA))
    assert out.device.type == "cuda"
    torch.testing.assert_close(out.cpu(), param(codes), atol=1e-5, rtol=1e-5)


def test_neuron_shapley_distributed_on_nccl_equals_single_process():
    """One NCCL rank on the GPU: the all-reduce path (statistics moved to
    the GPU and back each round, the bandit on the reduced sums) gives the
    single-process values."""
    import socket

    import torch.distributed as dist

    if not dist.is_nccl_available():
        pytest.skip("NCCL missing")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = load_digits_dataset()
    x, y = data.test_inputs[:64].to(CUDA), data.test_labels[:64].to(CUDA)
    model = digits_classifier().to(CUDA).eval()
    kw = dict(target=y, metric="loss", n_permutations=12, seed=3, top_k=4,
              truncation_tolerance=0.1)  # fmt: skip
    single = NeuronShapley(model, model.conv3).interpret(x, **kw)
    dist.init_process_group(
        "nccl", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1
    )
    try:
        reduced = NeuronShapley(model, model.conv3).interpret(
            x, distributed=True, **kw
        )
    finally:
        dist.destroy_process_group()
    torch.testing.assert_close(reduced.values, single.values, atol=1e-9, rtol=0)
    assert torch.equal(reduced.counts, single.counts)
    assert reduced.n_evaluations == single.n_evaluations
