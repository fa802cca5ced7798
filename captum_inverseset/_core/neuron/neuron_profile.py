"""Placeholder: being implemented."""


class NeuronProfile:
    """Not implemented yet."""

    def __init__(self, *args, **kwargs):
        raise NotImplementedError("NeuronProfile is not implemented yet")
