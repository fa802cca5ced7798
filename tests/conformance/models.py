"""Models the conformance cases use: the shipped digits models and ResNet-18."""

import torchvision

from captum_inverseset.zoo import digits_classifier, digits_generator


def make_digits_classifier():
    return digits_classifier()


def make_digits_generator():
    return digits_generator()


def make_resnet18():
    return torchvision.models.resnet18(weights=None)
