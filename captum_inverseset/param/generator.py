"""Treat any ``nn.Module`` code -> input as a generator."""

from typing import Optional, Sequence

import torch
from torch import nn

__all__ = ["GeneratorParameterization", "as_parameterization"]


class GeneratorParameterization(nn.Module):
    r"""Wrap a generator ``G`` (latent code -> model input) with its prior.

    Args:
        generator (nn.Module): maps codes ``(N, *latent_shape)`` to inputs.
            The shipped :func:`~captum_inverseset.zoo.digits_generator`,
            Lucent's ``upconvGAN`` or any GAN/VAE decoder.
        latent_shape (sequence of int): shape of one code, without batch.
        prior_std (float, optional): codes are drawn from
            :math:`\mathcal{N}(0, \sigma^2 I)`. Default: 1.0
        postprocess (nn.Module, optional): applied after the generator, e.g. a
            resize or normalisation to the classifier's input. Default: None
    """

    def __init__(
        self,
        generator: nn.Module,
        latent_shape: Sequence[int],
        prior_std: float = 1.0,
        postprocess: Optional[nn.Module] = None,
    ) -> None:
        super().__init__()
        if not callable(generator):
            raise TypeError("generator must be a callable nn.Module")
        if prior_std <= 0:
            raise ValueError(f"prior_std must be positive, got {prior_std}")
        self.generator = generator
        self.code_shape = tuple(int(s) for s in latent_shape)
        self.prior_std = float(prior_std)
        self.postprocess = postprocess

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        out = self.generator(codes)
        return self.postprocess(out) if self.postprocess is not None else out

    def random_codes(
        self,
        n: int,
        generator: Optional[torch.Generator] = None,
        device: Optional[torch.device] = None,
        scale: Optional[float] = None,
    ) -> torch.Tensor:
        std = self.prior_std if scale is None else scale
        codes = torch.randn((n, *self.code_shape), generator=generator) * std
        if device is None:
            p = (
                next(iter(self.generator.parameters()), None)
                if isinstance(self.generator, nn.Module)
                else None
            )
            device = p.device if p is not None else torch.device("cpu")
        return codes.to(device)


def as_parameterization(
    generator: nn.Module, latent_shape: Optional[Sequence[int]] = None
) -> nn.Module:
    """Return ``generator`` if it already has ``code_shape``/``random_codes``,
    else wrap it in :class:`GeneratorParameterization` (``latent_shape`` is
    then required, or read from a ``latent_dim`` attribute)."""
    if hasattr(generator, "random_codes") and hasattr(generator, "code_shape"):
        return generator
    if latent_shape is None:
        latent_dim = getattr(generator, "latent_dim", None)
        if latent_dim is None:
            raise ValueError(
                "latent_shape is required for a generator without a latent_dim "
                "attribute"
            )
        latent_shape = (int(latent_dim),)
    return GeneratorParameterization(generator, latent_shape)
