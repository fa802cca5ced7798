"""Every public method class, each on the models it must work with.

Each method contributes a module ``cases_<method>.py`` in this folder that
defines ``CASES``, a list of :class:`~tests.conformance.harness.Case`; they are
collected here, and the conformance tests run every check over every case.
"""

import importlib
import os
import pkgutil
from typing import List

from .harness import Case

CASES: List[Case] = []
_HERE = os.path.dirname(os.path.abspath(__file__))
for _info in sorted(pkgutil.iter_modules([_HERE]), key=lambda i: i.name):
    if _info.name.startswith("cases_"):
        _mod = importlib.import_module(f"{__package__}.{_info.name}")
        CASES.extend(_mod.CASES)
