"""Shipped models (digits classifier, generator and encoder) and loaders of
real pretrained weights that ship inside PyPI packages (the face DCGAN of
``gan-face-generate``, the MNIST CNN of ``ccexam``, MTCNN's ONet of
``facenet-pytorch``)."""

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
from .mnist import MNISTClassifier, digits_to_mnist, mnist_cnn, mnist_cnn_available
from .mtcnn import FaceDetector, face_detector, face_detector_available

__all__ = [
    "FaceDetector",
    "face_detector",
    "face_detector_available",
    "MNISTClassifier",
    "digits_to_mnist",
    "mnist_cnn",
    "mnist_cnn_available",
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
