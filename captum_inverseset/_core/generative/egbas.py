"""Placeholder: being implemented."""


class EGBAS:
    """Not implemented yet."""

    def __init__(self, *args, **kwargs):
        raise NotImplementedError("EGBAS is not implemented yet")
