"""Placeholder: being implemented."""


class NeuronInverseSet:
    """Not implemented yet."""

    def __init__(self, *args, **kwargs):
        raise NotImplementedError("NeuronInverseSet is not implemented yet")
