"""A real pretrained face network: the ONet of MTCNN, as shipped (pretrained)
in the PyPI package ``facenet-pytorch`` (MIT licence).

Install it without its dependencies (it pins old torch and numpy; ONet needs
only torch)::

    pip install --no-deps facenet-pytorch==2.6.0

(the Makefile's bootstrap does this). :func:`face_detector` builds the
package's ``ONet`` without weights and loads the shipped ``onet.pt`` with
``torch.load(..., weights_only=True)``, behind MTCNN's input scaling, so the
model takes ``(N, 3, H, W)`` RGB images in [0, 1] (resized to ONet's 48x48).
Its neurons of interest:

* ``onet.dense6_1``: the face / non-face logits; unit 1 is the face logit
  (``forward`` returns its softmax as the third output);
* ``onet.dense6_3``: the five facial landmarks, ``x1..x5, y1..y5`` in the
  48x48 crop's coordinates (0..1): eyes, nose, mouth corners;
* ``onet.dense5``: the 256-unit representation the heads read.
"""

from typing import Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._wheels import package_file, package_installed

__all__ = ["FaceDetector", "face_detector", "face_detector_available"]

_PACKAGE = "facenet_pytorch"
_INSTALL = "pip install --no-deps facenet-pytorch==2.6.0"


class FaceDetector(nn.Module):
    """MTCNN's ONet on images in [0, 1]: resized to 48x48, scaled as MTCNN
    scales its crops (``(255 x - 127.5) / 128``).

    Args:
        onet (nn.Module): the ONet; reached as ``model.onet``.

    Returns (forward):
        tuple: ``(boxes (N, 4), landmarks (N, 10), face probabilities (N, 2))``.
    """

    def __init__(self, onet: nn.Module) -> None:
        super().__init__()
        self.onet = onet

    def forward(self, x: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        x = F.interpolate(x, size=48, mode="bilinear", align_corners=False)
        return self.onet((x * 255 - 127.5) * 0.0078125)


def face_detector_available() -> bool:
    """Whether ``facenet-pytorch`` (the weights) is installed."""
    return package_installed(_PACKAGE)


def face_detector() -> FaceDetector:
    """MTCNN's pretrained ONet in eval mode, images in [0, 1].

    Raises:
        ModuleNotFoundError: when ``facenet-pytorch`` is not installed (the
            message gives the install command).

    Examples::

        >>> from captum_inverseset import NeuronInverseSet
        >>> from captum_inverseset.zoo import face_dcgan, face_detector
        >>> detector = face_detector()
        >>> sampler = NeuronInverseSet(detector, detector.onet.dense6_1,
        ...                            generator=face_dcgan())
        >>> faces = sampler.sample(1, (8.0, None), n_samples=8)  # face logit >= 8
    """
    path = package_file(
        _PACKAGE, "MTCNN's pretrained ONet", _INSTALL, "data", "onet.pt"
    )
    from facenet_pytorch.models.mtcnn import ONet

    onet = ONet(pretrained=False)
    onet.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return FaceDetector(onet).eval()
