"""The fast paths that benchmarks led to give what the plain paths give.

compute.text counts long texts with numpy and short ones with regular expressions;
compute.numeric analyses a few numbers with Python floats and more with numpy. tests/core checks
the public functions against the rules and the statistics module on short inputs, which reach
one path only; these pin each fast path to its plain twin.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import compute.numeric as numeric
import compute.text as text_kernel
from bench._common import make_text

pieces = st.sampled_from(
    list("ab1 .!?\n\r\t\u00a0\u2028\u3000\x1cé_-") + ["\r\n", "\n\n", "...", " \n ", "..\n", "?!", "\n \n"]
)
finite = st.floats(allow_nan=False, allow_infinity=False)


@contextlib.contextmanager
def patched(module: object, name: str, value: int) -> Iterator[None]:
    saved = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, saved)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.lists(pieces, max_size=80).map("".join), st.text(max_size=300)))
def test_vectorised_text_counts_equal_the_regular_expressions(text: str) -> None:
    with patched(text_kernel, "_VECTORISED_FROM", len(text) + 1):
        by_regex = text_kernel.analyze_text(text)
    assert text_kernel._analyze_long(text) == by_regex


@pytest.mark.parametrize("accented", [False, True])
def test_a_long_text_takes_the_vectorised_path_with_the_same_counts(accented: bool) -> None:
    text = make_text(50_000)
    if accented:
        text = text.replace("e", "é").replace(" a", "\u3000a")
    assert len(text) >= text_kernel._VECTORISED_FROM
    vectorised = text_kernel.analyze_text(text)
    with patched(text_kernel, "_VECTORISED_FROM", len(text) + 1):
        assert text_kernel.analyze_text(text) == vectorised


@settings(max_examples=300, deadline=None)
@given(st.lists(finite, min_size=1, max_size=numeric._FEW))
def test_few_numbers_path_agrees_with_the_numpy_path(values: list[float]) -> None:
    few = numeric._analyze_few(values)
    with patched(numeric, "_FEW", 0):
        general = numeric.analyze_numbers(values)
    if few is None:  # magnitudes that need rescaling are left to the numpy path by design
        return
    assert (few.minimum, few.maximum, few.median, few.count) == (
        general.minimum,
        general.maximum,
        general.median,
        general.count,
    )
    assert math.isclose(few.mean, general.mean, rel_tol=1e-12, abs_tol=2.0**-1074)
    assert math.isclose(few.standard_deviation, general.standard_deviation, rel_tol=1e-12, abs_tol=2.0**-1074)
