import pytest

import captum_inverseset

from .config import CASES
from .harness import ALL_CHECKS


@pytest.mark.parametrize("check", ALL_CHECKS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_conformance(case, check):
    check(case)


def test_config_lists_every_public_method_class():
    """Every exported class with an ``attribute`` method has a case."""
    public = {
        name
        for name in captum_inverseset.__all__
        if isinstance(getattr(captum_inverseset, name), type)
        and hasattr(getattr(captum_inverseset, name), "attribute")
    }
    covered = {case.id.split("-")[0] for case in CASES}
    missing = public - covered
    assert not missing, f"method classes without a conformance case: {missing}"
