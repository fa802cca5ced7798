import numpy as np
import pytest
import torch
from lucent.optvis.param.spatial import fft_image

from captum_inverseset.param import (
    BoxParameterization,
    FFTImageParameterization,
    GeneratorParameterization,
    PixelImageParameterization,
    as_parameterization,
    standard_transforms,
)
from captum_inverseset.zoo import digits_generator


def test_box_parameterization_stays_in_box_and_inverts():
    box = BoxParameterization((4,), low=-2.0, high=3.0)
    codes = box.random_codes(100, generator=torch.Generator().manual_seed(0)) * 10
    x = box(codes)
    assert x.min() >= -2.0 and x.max() <= 3.0
    inner = torch.linspace(-1.9, 2.9, 8).reshape(2, 4)
    assert torch.allclose(box(box.inverse(inner)), inner, atol=1e-5)


def test_box_rejects_empty_box():
    with pytest.raises(ValueError, match="high"):
        BoxParameterization((2,), low=1.0, high=1.0)


@pytest.mark.parametrize("shape", [(3, 16, 16), (1, 8, 7)])
def test_fft_parameterization_matches_lucent(shape):
    torch.manual_seed(0)
    params, image_f = fft_image((2, *shape), sd=0.5)
    ours = FFTImageParameterization(shape, decorrelate=False)
    assert ours.code_shape == tuple(params[0].shape[1:])
    theirs_pre = image_f()  # Lucent's spectrum image before the sigmoid
    mine = ours(params[0].detach())
    assert torch.allclose(mine, torch.sigmoid(theirs_pre.detach()), atol=1e-5)
    assert mine.shape == (2, *shape)


def test_fft_decorrelation_uses_lucent_matrix():
    from lucent.optvis.param.color import color_correlation_normalized

    p = FFTImageParameterization((3, 8, 8), decorrelate=True)
    assert np.allclose(p.color_matrix.numpy(), color_correlation_normalized.T)
    x = p(p.random_codes(2, generator=torch.Generator().manual_seed(0), scale=1.0))
    assert x.min() >= 0 and x.max() <= 1


def test_pixel_parameterization_range():
    p = PixelImageParameterization((3, 4, 4))
    x = p(torch.randn(2, 3, 4, 4) * 5)
    assert x.min() >= 0 and x.max() <= 1


def test_generator_wrapper():
    g = as_parameterization(digits_generator())
    assert isinstance(g, GeneratorParameterization) and g.code_shape == (8,)
    codes = g.random_codes(3, generator=torch.Generator().manual_seed(1))
    assert g(codes).shape == (3, 1, 8, 8)
    with pytest.raises(ValueError, match="latent_shape"):
        as_parameterization(torch.nn.Linear(2, 2))


def test_transforms_seeded_and_on_input_device():
    t = standard_transforms(32)
    x = torch.rand(2, 3, 32, 32)
    a = t(x, generator=torch.Generator().manual_seed(3))
    b = t(x, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a.device == x.device
    assert a.shape[:2] == (2, 3)


@pytest.mark.parametrize("shape", [(3, 16, 16), (1, 8, 7), (3, 9, 12)])
def test_image_parameterizations_invert_images(shape):
    """Dataset images become starting codes: forward(inverse(x)) == x."""
    x = torch.rand(2, *shape, generator=torch.Generator().manual_seed(0))
    x = 0.05 + 0.9 * x
    for param in (FFTImageParameterization(shape), PixelImageParameterization(shape)):
        codes = param.inverse(x)
        assert codes.shape == (2, *param.code_shape)
        torch.testing.assert_close(param(codes), x, atol=1e-5, rtol=0)


def test_tuple_parameterization_splits_and_inverts():
    from captum_inverseset.param import TupleParameterization

    p = TupleParameterization([BoxParameterization((2, 3)), BoxParameterization((4,))])
    assert p.code_shape == (10,)
    codes = p.random_codes(5, generator=torch.Generator().manual_seed(0))
    a, b = p(codes)
    assert a.shape == (5, 2, 3) and b.shape == (5, 4)
    torch.testing.assert_close(p.inverse((a, b)), codes, atol=1e-4, rtol=0)
