"""Placeholder: being implemented."""


class NeuronShapley:
    """Not implemented yet."""

    def __init__(self, *args, **kwargs):
        raise NotImplementedError("NeuronShapley is not implemented yet")
