"""The fast paths that benchmarks led to give what the plain paths give.

compute.text counts long texts with numpy and short ones with regular expressions;
compute.numeric analyses a few numbers with Python floats and more with numpy, and selects the
median of many among the values a sample brackets. tests/core checks the public functions
against the rules and the statistics module on short inputs, which reach one path only; these
pin each fast path to its plain twin.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from fractions import Fraction

import numpy as np
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


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(pieces, max_size=80).map("".join), st.integers(min_value=1, max_value=9))
def test_vectorised_text_counts_carry_across_block_edges(text: str, block_chars: int) -> None:
    # Tiny blocks put words, sentences, blank lines and terminators across every kind of edge.
    with patched(text_kernel, "_VECTORISED_FROM", len(text) + 1):
        by_regex = text_kernel.analyze_text(text)
    with patched(text_kernel, "_BLOCK_CHARS", block_chars):
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


def sorted_middle(data: np.ndarray) -> float:
    """The median by sorting everything, the midpoint exactly rounded."""
    ordered = np.sort(data)
    half = data.size // 2
    if data.size % 2:
        return float(ordered[half])
    return float((Fraction(float(ordered[half - 1])) + Fraction(float(ordered[half]))) / 2)


def with_sample(sampled: np.ndarray, others: np.ndarray) -> np.ndarray:
    """An array whose strided sample, the values compute.numeric brackets the median with, is
    ``sampled``, and whose other positions hold ``others``."""
    size = sampled.size + others.size
    at_sample = np.zeros(size, dtype=bool)
    at_sample[:: size // numeric._SAMPLE_SIZE] = True
    assert np.count_nonzero(at_sample) == sampled.size
    data = np.empty(size)
    data[at_sample] = sampled
    data[~at_sample] = others
    return data


def sample_size(size: int) -> int:
    return len(range(0, size, size // numeric._SAMPLE_SIZE))


def layout(data: np.ndarray, order: str, rng: np.random.Generator) -> np.ndarray:
    if order == "sorted":
        return np.sort(data)
    if order == "reversed":
        return np.sort(data)[::-1].copy()
    if order == "sample all high":
        # Every value the strided sample reads is among the largest: its bracket misses the median.
        ordered = np.sort(data)
        sampled = sample_size(data.size)
        return with_sample(ordered[-sampled:], rng.permutation(ordered[:-sampled]))
    return rng.permutation(data)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32 - 1),
    size=st.integers(numeric._SELECT_DIRECTLY_UP_TO + 1, 300_000),
    distinct=st.sampled_from([1, 2, 7, 1000, None]),
    order=st.sampled_from(["shuffled", "sorted", "reversed", "sample all high"]),
)
def test_the_median_of_many_values_is_the_sorted_middle(seed: int, size: int, distinct: int | None, order: str) -> None:
    rng = np.random.default_rng(seed)
    if distinct is None:
        data = rng.uniform(-1e4, 1e4, size)
    else:
        data = rng.choice(rng.uniform(-1e4, 1e4, distinct), size)
    data = layout(data, order, rng)
    assert numeric._median(data) == sorted_middle(data)


def sample_bracket_ends_between_the_pair(size: int) -> np.ndarray:
    """0 .. size-1 arranged so that the top of the sample's bracket is the lower value of the
    median pair: the bracket holds one of the pair, and the upper one lies above it."""
    rank = size // 2 - 1
    sampled = sample_size(size)
    top = rank * sampled // size + numeric._SAMPLE_MARGIN
    sample_values = np.concatenate([np.arange(top), [rank], np.arange(size - (sampled - top - 1), size)])
    return with_sample(sample_values, np.setdiff1d(np.arange(size), sample_values))


@pytest.mark.parametrize(
    "data",
    [
        sample_bracket_ends_between_the_pair(100_000),
        np.concatenate([np.full(50_000, 1.0), np.full(50_000, 2.0)]),  # the bracket holds every value
        np.concatenate([np.full(50_000, -0.0), np.full(50_001, 0.0)]),  # equal values of both signs
        np.concatenate([np.full(20_000, 1.7976931348623157e308), np.full(20_000, 1e308)]),  # midpoint overflows
        np.arange(1_000_000, dtype=np.float64)[::-1].copy(),  # narrowed twice
    ],
    ids=["pair across the bracket", "two values", "signed zeros", "huge pair", "a million"],
)
def test_the_median_of_many_values_at_the_edges(data: np.ndarray) -> None:
    assert data.size > numeric._SELECT_DIRECTLY_UP_TO
    assert numeric._median(data) == sorted_middle(data)
