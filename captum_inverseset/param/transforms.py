"""Lucent's robustness transforms as ``nn.Module``\\ s with explicit randomness.

Lucent's ``transform.jitter``/``random_scale``/``random_rotate`` draw from
NumPy's global random state and move tensors to a global device. These modules
do the same image operations (translation and rotation through kornia, as
Lucent does) on the input's own device, drawing from a ``torch.Generator``
passed to ``forward``.

Unlike Lucent's, they keep the model's input size by default: Lucent's
``standard_transforms`` pad a 224-pixel image to about 240 pixels, which a
network with global pooling accepts but a network with a fixed-size linear
head (a 28x28 MNIST model, say) does not. Here :class:`RandomScale` crops or
pads its result back to the input size, and :class:`TransformPipeline` (so
:func:`standard_transforms`) centre-crops or pads its output back to the size
of its input; pass ``keep_size=False`` for Lucent's growing sizes.
"""

from typing import Optional, Sequence

import kornia
import torch
import torch.nn.functional as F
from kornia.geometry.transform import translate
from torch import nn

__all__ = [
    "Jitter",
    "Pad",
    "RandomRotate",
    "RandomScale",
    "TransformPipeline",
    "fit_to_size",
    "standard_transforms",
]


def _choice(values: Sequence, generator: Optional[torch.Generator]):
    i = int(torch.randint(len(values), (1,), generator=generator))
    return values[i]


def fit_to_size(x: torch.Tensor, height: int, width: int, value: float = 0.5):
    """Centre-crop or pad (with the constant ``value``) the last two
    dimensions of ``x`` to ``height x width``."""
    h, w = x.shape[-2:]
    top, left = max(0, (h - height) // 2), max(0, (w - width) // 2)
    x = x[..., top : top + height, left : left + width]
    h, w = x.shape[-2:]
    if (h, w) == (height, width):
        return x
    pad_h, pad_w = height - h, width - w
    return F.pad(
        x,
        [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2],
        value=value,
    )


class Pad(nn.Module):
    """Pad by ``width`` pixels on every side (constant ``value`` or reflect).

    The output is larger than the input; inside a :class:`TransformPipeline`
    (``keep_size=True``) the pipeline's output is cropped back, so the
    padding only gives room for the jitter, scaling and rotation that follow.
    """

    def __init__(self, width: int, mode: str = "constant", value: float = 0.5):
        super().__init__()
        self.width, self.mode, self.value = int(width), mode, float(value)

    def forward(self, x: torch.Tensor, generator=None) -> torch.Tensor:
        value = self.value if self.mode == "constant" else None
        if value is None:
            return F.pad(x, [self.width] * 4, mode=self.mode)
        return F.pad(x, [self.width] * 4, mode=self.mode, value=value)


class Jitter(nn.Module):
    """Translate by a random offset in ``{0, .., d-1}`` pixels on each axis
    (the size is unchanged)."""

    def __init__(self, d: int):
        super().__init__()
        if d < 2:
            raise ValueError(f"d must be at least 2, got {d}")
        self.d = int(d)

    def forward(self, x: torch.Tensor, generator=None) -> torch.Tensor:
        shift = torch.randint(self.d, (2,), generator=generator).float()
        return translate(x, shift[None].to(device=x.device, dtype=x.dtype))


class RandomScale(nn.Module):
    """Rescale by a factor drawn from ``scales`` (bilinear).

    Args:
        scales (sequence of float): the factors to draw from.
        keep_size (bool, optional): centre-crop an enlarged image and pad a
            shrunk one back to the input size; with False an enlarged image
            stays larger (Lucent's behaviour) and a shrunk one is padded.
            Default: True
        value (float, optional): the padding value. Default: 0.0
    """

    def __init__(
        self, scales: Sequence[float], keep_size: bool = True, value: float = 0.0
    ):
        super().__init__()
        self.scales = [float(s) for s in scales]
        self.keep_size = bool(keep_size)
        self.value = float(value)

    def forward(self, x: torch.Tensor, generator=None) -> torch.Tensor:
        s = _choice(self.scales, generator)
        h, w = x.shape[-2:]
        size = [max(1, int(round(s * h))), max(1, int(round(s * w)))]
        y = F.interpolate(x, size=size, mode="bilinear", align_corners=True)
        if self.keep_size:
            return fit_to_size(y, h, w, self.value)
        pad_h, pad_w = max(0, (h - size[0] + 1) // 2), max(0, (w - size[1] + 1) // 2)
        return F.pad(y, [pad_w, pad_w, pad_h, pad_h], value=self.value)


class RandomRotate(nn.Module):
    """Rotate about the centre by an angle (degrees) drawn from ``angles``
    (the size is unchanged)."""

    def __init__(self, angles: Sequence[float]):
        super().__init__()
        self.angles = [float(a) for a in angles]

    def forward(self, x: torch.Tensor, generator=None) -> torch.Tensor:
        b, _, h, w = x.shape
        angle = torch.full((b,), _choice(self.angles, generator), device=x.device)
        center = torch.tensor([[(w - 1) / 2.0, (h - 1) / 2.0]], device=x.device)
        center = center.expand(b, 2)
        scale = torch.ones(b, 2, device=x.device)
        matrix = kornia.get_rotation_matrix2d(center, angle, scale)
        return kornia.warp_affine(x.float(), matrix.to(x.dtype), dsize=(h, w))


class TransformPipeline(nn.Module):
    """Apply transforms in order, passing one generator to each.

    Args:
        transforms (sequence of nn.Module): the transforms.
        keep_size (bool, optional): centre-crop (or pad with ``value``) the
            result back to the input's height and width, so a model with a
            fixed input size accepts it. Default: True
        value (float, optional): padding value when the result is smaller
            than the input. Default: 0.5
    """

    def __init__(
        self,
        transforms: Sequence[nn.Module],
        keep_size: bool = True,
        value: float = 0.5,
    ):
        super().__init__()
        self.transforms = nn.ModuleList(transforms)
        self.keep_size = bool(keep_size)
        self.value = float(value)

    def forward(self, x: torch.Tensor, generator=None) -> torch.Tensor:
        h, w = x.shape[-2:]
        for t in self.transforms:
            x = t(x, generator=generator)
        if self.keep_size:
            x = fit_to_size(x, h, w, self.value)
        return x


def standard_transforms(
    image_size: int = 224, keep_size: bool = True
) -> TransformPipeline:
    """Lucent's ``standard_transforms`` scaled to the image size.

    For 224-pixel images this is Lucent's list (pad 12, jitter 8, scale
    0.9..1.1, rotate -10..10 degrees, jitter 4); smaller images get pad and
    jitter proportional to their size (at least 1 and 2 pixels).

    With ``keep_size=True`` (the default) the result has the size of the
    input (the padded, scaled and rotated image is centre-cropped back), so
    ``standard_transforms(28)`` can be used with a 28x28 model whose linear
    head needs exactly 28x28 inputs. ``keep_size=False`` gives Lucent's
    sizes (about ``image_size + 2 * pad``, up to 10% more when scaled up).
    """
    f = image_size / 224.0
    pad = max(1, int(round(12 * f)))
    j1, j2 = max(2, int(round(8 * f))), max(2, int(round(4 * f)))
    return TransformPipeline(
        [
            Pad(pad, mode="constant", value=0.5),
            Jitter(j1),
            RandomScale([1 + (i - 5) / 50.0 for i in range(11)], keep_size=keep_size),
            RandomRotate(list(range(-10, 11)) + 5 * [0]),
            Jitter(j2),
        ],
        keep_size=keep_size,
    )
