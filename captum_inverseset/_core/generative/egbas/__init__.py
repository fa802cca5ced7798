"""E-GBAS (Jeon, Jeong & Choi, AAAI 2020): the public class and its result."""

from .egbas import EGBAS
from .result import EGBASResult, EGBASWarning

__all__ = ["EGBAS", "EGBASResult", "EGBASWarning"]
