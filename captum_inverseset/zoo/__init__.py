"""Shipped models: small digits classifier, generator and encoder."""

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

__all__ = [
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
