"""A real pretrained classifier: the MNIST CNN of the PyPI package ``ccexam``
(MIT licence), a network nobody in this project wrote.

The package ships its state dict inside its wheel. Its declared dependencies
pin old versions of torch and numpy, so install it without them::

    pip install --no-deps ccexam==1.0.0

(the Makefile's bootstrap does this). :func:`mnist_cnn` builds the package's
own ``MNISTNet`` and loads the shipped weights with
``torch.load(..., weights_only=True)``, behind the MNIST normalisation, so the
model takes ``(N, 1, 28, 28)`` images in [0, 1]:

* ``net.features``: ``Conv2d(1, 32) -> ReLU -> MaxPool -> Conv2d(32, 64) ->
  ReLU -> MaxPool`` (``net.features[3]`` is the 64-filter layer);
* ``net.classifier``: ``Linear(3136, 128) -> ReLU -> Linear(128, 10)``.

scikit-learn's bundled 8x8 digits, laid out as MNIST digits by
:func:`digits_to_mnist`, are data it has never seen.
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._wheels import package_file, package_installed

__all__ = ["MNISTClassifier", "digits_to_mnist", "mnist_cnn", "mnist_cnn_available"]

_PACKAGE = "ccexam"
_INSTALL = "pip install --no-deps ccexam==1.0.0"
_MEAN, _STD = 0.1307, 0.3081  # the statistics ccexam trained with


class MNISTClassifier(nn.Module):
    """ccexam's MNIST network behind its input normalisation.

    The forward calls the network's ``features``, a flatten and its
    ``classifier`` directly (what ``MNISTNet.forward`` does after checking the
    input size in Python, a check ``torch.fx`` cannot trace), so the model
    traces and NeuronShapley's fast engines apply.

    Args:
        net (nn.Module): the ``MNISTNet``; its layers are reached as
            ``model.net.<name>``.
    """

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: Tensor) -> Tensor:
        h = self.net.features((x - _MEAN) / _STD)
        return self.net.classifier(h.flatten(1))


def mnist_cnn_available() -> bool:
    """Whether ``ccexam`` (the weights) is installed."""
    return package_installed(_PACKAGE)


def mnist_cnn() -> MNISTClassifier:
    """ccexam's pretrained MNIST CNN in eval mode, inputs in [0, 1].

    Returns:
        MNISTClassifier: ``(N, 1, 28, 28) -> (N, 10)`` logits.

    Raises:
        ModuleNotFoundError: when ``ccexam`` is not installed (the message
            gives the install command).

    Examples::

        >>> from captum.attr import LayerConductance
        >>> from captum_inverseset.zoo import (
        ...     digits_to_mnist, load_digits_dataset, mnist_cnn)
        >>> model = mnist_cnn()
        >>> _, _, x, y = load_digits_dataset()
        >>> x28 = digits_to_mnist(x)
        >>> conv2 = model.net.features[3]
        >>> LayerConductance(model, conv2).attribute(x28[:4], target=y[:4])
    """
    path = package_file(
        _PACKAGE, "the pretrained MNIST CNN", _INSTALL, "weights", "mnist.pth"
    )
    from ccexam.models import MNISTNet

    net = MNISTNet(28)
    net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return MNISTClassifier(net).eval()


def digits_to_mnist(x: Tensor, size: int = 18) -> Tensor:
    """Lay images ``(N, 1, H, W)`` out as MNIST digits: resized (bicubic,
    clamped to [0, 1]) to ``size x size`` and centred on a 28x28 black canvas,
    as MNIST centres its digits in a 20x20 box.

    The default 18 gives ccexam's CNN 82.7% on scikit-learn's 359 test digits
    (71.6% at 20 bilinear, 42.6% when the digit fills all 28x28 pixels).
    """
    if x.dim() != 4:
        raise ValueError(f"x must be a (N, C, H, W) batch, got shape {tuple(x.shape)}")
    if not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= 28:
        raise ValueError(f"size must be an integer in 1..28, got {size!r}")
    small = F.interpolate(x, size=size, mode="bicubic", align_corners=False)
    before = (28 - size) // 2
    after = 28 - size - before
    return F.pad(small.clamp(0, 1), [before, after, before, after])
