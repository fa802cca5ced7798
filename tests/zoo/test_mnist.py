import pytest
import torch

from captum_inverseset.zoo import (
    digits_to_mnist,
    load_digits_dataset,
    mnist_cnn,
    mnist_cnn_available,
)


def test_digits_to_mnist_centres_the_digit():
    x = torch.ones(2, 1, 8, 8)
    out = digits_to_mnist(x)
    assert out.shape == (2, 1, 28, 28)
    assert out.min() >= 0 and out.max() <= 1
    # an 18x18 digit in the middle, a 5-pixel black border around it
    assert out[..., :5, :].abs().max() == 0 and out[..., -5:, :].abs().max() == 0
    assert torch.allclose(out[..., 5:23, 5:23], torch.ones(2, 1, 18, 18))
    with pytest.raises(ValueError, match="size"):
        digits_to_mnist(x, size=30)
    with pytest.raises(ValueError, match="x must be"):
        digits_to_mnist(torch.ones(8, 8))


@pytest.mark.skipif(not mnist_cnn_available(), reason="ccexam missing")
def test_pretrained_mnist_cnn_classifies_the_bundled_digits():
    model = mnist_cnn()
    assert not model.training
    assert model.net.features[3].out_channels == 64
    _, _, x, y = load_digits_dataset()
    with torch.no_grad():
        accuracy = (model(digits_to_mnist(x)).argmax(1) == y).float().mean()
    # trained weights on data they never saw (a random init is near 0.1)
    assert accuracy > 0.75


@pytest.mark.skipif(not mnist_cnn_available(), reason="ccexam missing")
def test_pretrained_mnist_cnn_is_the_package_network_and_traces():
    from torch import fx

    model = mnist_cnn()
    x = torch.rand(3, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(model(x), model.net((x - 0.1307) / 0.3081))
    fx.symbolic_trace(model)  # the fast Shapley engines need a traceable model
