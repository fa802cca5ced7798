"""Shipped models (digits classifier, generator and encoder) and loaders of
real pretrained weights that ship inside PyPI packages (the face DCGAN)."""

from .digits import (
    LATENT_DIM,
    DigitsClassifier,
    DigitsDataset,
    DigitsEncoder,
    DigitsGenerator,
    digits_classifier,
    digits_encoder,
    digits_generator,
    load_digits_dataset,
    load_weights,
    weights_path,
)
from .faces import (
    FACE_LATENT_DIM,
    FaceDCGANGenerator,
    face_dcgan,
    face_dcgan_available,
    face_dcgan_weights_path,
)

__all__ = [
    "FACE_LATENT_DIM",
    "FaceDCGANGenerator",
    "face_dcgan",
    "face_dcgan_available",
    "face_dcgan_weights_path",
    "LATENT_DIM",
    "DigitsClassifier",
    "DigitsDataset",
    "DigitsEncoder",
    "DigitsGenerator",
    "digits_classifier",
    "digits_encoder",
    "digits_generator",
    "load_digits_dataset",
    "load_weights",
    "weights_path",
]
