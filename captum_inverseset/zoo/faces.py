"""A real pretrained face generator: the DCGAN of the PyPI package
``gan-face-generate`` (MIT licence; trained on DigiFace-1M).

The package ships its generator's state dict inside its wheel. Its declared
dependencies pull in wandb and more, so install it without them::

    pip install --no-deps gan-face-generate==1.1.1

(``make faces`` does this; CI installs it). :func:`face_dcgan` builds our own
copy of the DCGAN architecture, with the same layer layout, and loads the
shipped weights with ``torch.load(..., weights_only=True)``: nothing in the
file is unpickled as code.

* latent :math:`z \\in \\mathbb{R}^{100}`, prior :math:`\\mathcal{N}(0, I)`;
* output: a ``3 x 64 x 64`` RGB face, in [0, 1] by default (the network's tanh
  output mapped by :math:`(t + 1) / 2`) or in [-1, 1] with
  ``output_range="tanh"``;
* four ``ConvTranspose2d -> BatchNorm2d -> ReLU`` blocks; the BatchNorm
  outputs ``main.1`` (512 x 4 x 4 = 8192 units), ``main.4`` (256 x 8 x 8),
  ``main.7`` and ``main.10`` are the pre-activations whose signs define
  E-GBAS's generative boundaries.
"""

from typing import Optional

import torch
from torch import Tensor, nn

from ._wheels import package_file, package_installed

__all__ = [
    "FACE_LATENT_DIM",
    "FaceDCGANGenerator",
    "face_dcgan",
    "face_dcgan_available",
    "face_dcgan_weights_path",
]

FACE_LATENT_DIM = 100
_PACKAGE = "gan_face_generate"
_INSTALL = "pip install --no-deps gan-face-generate==1.1.1"


class FaceDCGANGenerator(nn.Module):
    r"""DCGAN generator, latent ``(N, nz)`` (or ``(N, nz, 1, 1)``) -> images
    ``(N, nc, 64, 64)``.

    ``main`` is the DCGAN layer stack (its indices match the state dict of
    ``gan-face-generate``). It has ``latent_dim``, ``code_shape``,
    ``prior_std`` and :meth:`random_codes`, so it works directly as the
    ``generator`` of :class:`~captum_inverseset.NeuronInverseSet` and of
    :class:`~captum_inverseset.EGBAS`.

    Args:
        nz (int, optional): latent size. Default: 100
        ngf (int, optional): feature maps of the last block. Default: 64
        nc (int, optional): output channels. Default: 3
        output_range (str, optional): ``"unit"`` maps the tanh output to
            [0, 1]; ``"tanh"`` leaves it in [-1, 1]. Default: "unit"
    """

    def __init__(
        self,
        nz: int = FACE_LATENT_DIM,
        ngf: int = 64,
        nc: int = 3,
        output_range: str = "unit",
    ) -> None:
        super().__init__()
        if output_range not in ("unit", "tanh"):
            raise ValueError(
                f"output_range must be 'unit' or 'tanh', got {output_range!r}"
            )
        widths = [nz, ngf * 8, ngf * 4, ngf * 2, ngf]
        layers = []
        for i, (cin, cout) in enumerate(zip(widths[:-1], widths[1:])):
            stride, pad = (1, 0) if i == 0 else (2, 1)
            layers += [
                nn.ConvTranspose2d(cin, cout, 4, stride, pad, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(),
            ]
        layers += [nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)
        self.latent_dim = int(nz)
        self.code_shape = (int(nz),)
        self.prior_std = 1.0
        self.output_range = output_range

    def forward(self, z: Tensor) -> Tensor:
        if z.dim() == 2:
            z = z[:, :, None, None]
        out = self.main(z)
        return (out + 1) / 2 if self.output_range == "unit" else out

    def random_codes(
        self,
        n: int,
        generator: Optional[torch.Generator] = None,
        device: Optional[torch.device] = None,
    ) -> Tensor:
        """``n`` latents from the prior :math:`\\mathcal{N}(0, I)` (drawn on
        the CPU, then moved to ``device``, by default the model's)."""
        codes = torch.randn((n, self.latent_dim), generator=generator)
        if device is None:
            device = next(self.parameters()).device
        return codes.to(device)


def face_dcgan_available() -> bool:
    """Whether ``gan-face-generate`` (the weights) is installed."""
    return package_installed(_PACKAGE)


def face_dcgan_weights_path() -> str:
    """Path of the weights file inside the installed ``gan-face-generate``."""
    return package_file(_PACKAGE, "the face DCGAN's weights", _INSTALL, "weights.tar")


def face_dcgan(
    pretrained: bool = True, output_range: str = "unit"
) -> FaceDCGANGenerator:
    """The pretrained face DCGAN (eval mode), ``(100,)`` ~ N(0, I) -> 3x64x64.

    Args:
        pretrained (bool, optional): load the weights shipped in
            ``gan-face-generate`` (weights-only); False gives a random
            initialisation of the same architecture (for tests). Default: True
        output_range (str, optional): ``"unit"`` ([0, 1]) or ``"tanh"``
            ([-1, 1]). Default: "unit"

    Raises:
        ModuleNotFoundError: ``pretrained=True`` without the package installed
            (the message says how to install it).
    """
    model = FaceDCGANGenerator(output_range=output_range)
    if pretrained:
        state = torch.load(
            face_dcgan_weights_path(), map_location="cpu", weights_only=True
        )
        if isinstance(state, dict) and "netG_state_dict" in state:
            state = state["netG_state_dict"]
        model.load_state_dict(state)
    return model.eval()
