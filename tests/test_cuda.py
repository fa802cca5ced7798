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
        ns._additive = incremental
        out = ns.attribute(
            x.to(device), target=y.to(device), metric="loss", n_permutations=3, seed=0
        )
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
