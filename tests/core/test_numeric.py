"""The numeric kernel against Python's exact statistics module."""

from __future__ import annotations

import math
import statistics
import sys
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from compute import numeric
from compute.numeric import analyze_numbers

finite = st.floats(allow_nan=False, allow_infinity=False)
# Magnitudes that stress every path: huge, subnormal, and values that cancel.
extreme = st.sampled_from([sys.float_info.max, -sys.float_info.max, 1e308, -1e308, 5e-324, -5e-324, 1e16, -1e16, 0.0])
values = st.lists(st.one_of(finite, extreme), min_size=1, max_size=60)
# Below the normal range floats are 2**-1074 apart: one spacing is the finest agreement possible.
SUBNORMAL_SPACING = 2.0**-1074


def exact_or_none(function, data):
    """The statistics module's exactly rounded result, or None when the true result overflows."""
    try:
        return function(data)
    except OverflowError:
        return None


def exact_median(data: list[float]) -> float | None:
    ordered = sorted(data)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    try:
        return float((Fraction(ordered[middle - 1]) + Fraction(ordered[middle])) / 2)
    except OverflowError:
        return None


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values)
@example([1e16, 1.0, -1e16])
@example([1e308, 1e308])
@example([sys.float_info.max, sys.float_info.max, -sys.float_info.max, -sys.float_info.max, 1.0])
@example([5e-324, 1e-323, 1.5e-323])
@example([1e200, -1e200])
@example([1.0, 1.0000000000000002, 1.0000000000000002])
def test_matches_the_statistics_module(data: list[float]) -> None:
    assert_matches_the_statistics_module(data)


# Past the few-numbers path: the split sum, proven within its bound or passed on to fsum.
many_values = st.lists(
    st.one_of(finite, extreme, st.floats(-1e4, 1e4)), min_size=numeric._FEW + 1, max_size=numeric._FEW + 300
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(many_values)
def test_many_numbers_match_the_statistics_module(data: list[float]) -> None:
    assert_matches_the_statistics_module(data)


def assert_matches_the_statistics_module(data: list[float]) -> None:
    result = analyze_numbers(data)
    assert result.count == len(data)
    assert result.minimum == min(data)
    assert result.maximum == max(data)
    median = exact_median(data)
    if median is not None:
        assert result.median == median
    mean = exact_or_none(statistics.mean, data)
    if mean is not None:
        assert math.isclose(result.mean, mean, rel_tol=1e-12, abs_tol=SUBNORMAL_SPACING)
    if len(data) == 1:
        assert result.standard_deviation == 0.0
        return
    stdev = exact_or_none(statistics.stdev, data)
    assume(stdev is not None and math.isfinite(stdev))
    assert math.isclose(result.standard_deviation, stdev, rel_tol=1e-12, abs_tol=SUBNORMAL_SPACING)


def test_seed_example() -> None:
    result = analyze_numbers([1, 2, 3, 4, 5])
    assert (result.minimum, result.maximum, result.mean, result.median, result.count) == (1.0, 5.0, 3.0, 3.0, 5)
    assert round(result.standard_deviation, 2) == 1.58
    assert result.standard_deviation == statistics.stdev([1, 2, 3, 4, 5])


@pytest.mark.parametrize(
    ("data", "mean"),
    [
        ([1e16, 1.0, -1e16], 1 / 3),  # numpy's pairwise mean says 0
        ([1e20, 1.0, -1e20] * 60, 1 / 3),  # beyond the Python-float path; the split sum's bound fails
        ([1e308, 1e308], 1e308),  # math.fsum alone overflows here
        ([sys.float_info.max] * 3, sys.float_info.max),
    ],
)
def test_mean_survives_cancellation_and_overflow(data: list[float], mean: float) -> None:
    assert analyze_numbers(data).mean == mean


def test_mean_of_values_whose_remainders_cancel() -> None:
    # The split leaves the 1e20s remainders of about 1e7 that cancel, and their sum drops the
    # 1e-10s (3e-11 of the mean): the error bound must send this to fsum.
    data = [1e20, 3.0, -1e20, 1e-10] * 60
    assert math.isclose(analyze_numbers(data).mean, statistics.mean(data), rel_tol=1e-12)


# Values of both signs (the split sum's case), some of them pairs that nearly cancel.
near_pairs = st.lists(st.tuples(st.floats(-1e20, 1e20), st.floats(-1e3, 1e3)), min_size=1, max_size=100).map(
    lambda pairs: [value for x, e in pairs for value in (x, e - x)]
)
mixed_values = st.lists(st.one_of(finite, st.floats(-1e20, 1e20), st.floats(-1, 1)), min_size=2, max_size=400)


@settings(max_examples=400, deadline=None)
@given(st.one_of(near_pairs, mixed_values))
def test_the_split_sum_keeps_its_promise(data: list[float]) -> None:
    values = np.array(data)
    assume(values.min() < 0 < values.max())
    try:
        exact = float(sum(map(Fraction, data)))
    except OverflowError:
        exact = math.inf
    total = numeric._split_sum(values, float(np.abs(values).max()))
    if total is not None:
        assert abs(total - exact) <= 1e-13 * abs(exact)


@pytest.mark.parametrize("layout", ["mixed", "halves that cancel"])
def test_the_split_sum_decides_values_of_both_signs(layout: str) -> None:
    rng = np.random.default_rng(7)
    if layout == "mixed":
        values = rng.uniform(-1e4, 1e4, 100_000)
    else:
        # The halves' partial sums grow to within 2**-1.1 of n * peak and meet only at the end:
        # their parts rounded to 2**k must add without a single rounding.
        half = rng.uniform(0.9, 1.0, 2**16 - 1) * 2.0**50
        values = np.concatenate([half, rng.uniform(0, 1e6, half.size) - half])
    total = numeric._split_sum(values, float(np.abs(values).max()))
    assert total is not None
    exact = float(sum(map(Fraction, values.tolist())))
    assert abs(total - exact) <= 1e-13 * abs(exact)


def test_median_of_two_huge_values_does_not_overflow() -> None:
    top = sys.float_info.max
    assert analyze_numbers([top, top]).median == top
    assert analyze_numbers([top, top / 2]).median == float((Fraction(top) + Fraction(top / 2)) / 2)


def test_standard_deviation_of_huge_spread_is_finite() -> None:
    top = sys.float_info.max
    data = [top] + [-top] * 9
    assert math.isclose(analyze_numbers(data).standard_deviation, statistics.stdev(data), rel_tol=1e-12)


@pytest.mark.parametrize("data", [[1.7e308, -1.7e308], [sys.float_info.max, -sys.float_info.max] * 81])
def test_standard_deviation_beyond_the_float_range_is_none(data: list[float]) -> None:
    # JSON has no infinity: the answer says null (docs/api.md), and the type says so.
    with pytest.raises(OverflowError):
        statistics.stdev(data)
    assert analyze_numbers(data).standard_deviation is None


def test_large_input_agrees_with_statistics() -> None:
    data = [((i * 7919) % 10007) / 3.0 - 1600.0 for i in range(200_000)]
    result = analyze_numbers(data)
    assert math.isclose(result.mean, statistics.mean(data), rel_tol=1e-12)
    assert math.isclose(result.standard_deviation, statistics.stdev(data), rel_tol=1e-12)
    assert result.median == statistics.median(data)


@pytest.mark.parametrize(
    ("n", "value", "ulps", "outliers"),
    [
        (1_000_000, 0.1, 1, 1),
        (1_000_000, 0.7, 1, 1),
        (1_000_000, 123.456, 1, 1),
        (1_000_000, 0.1, 1, 3),
        (1_000_000, -2.7, 3, 1),
        (1_000_000, 3e-280, 1, 3),
        (100_000, 0.3, 1, 1),
        (100_000, -1.3, 1, 1),
        (100_000, 1e300, 1, 1),
        (100_000, 7e-280, 1, 1),
    ],
)
def test_standard_deviation_of_values_an_ulp_apart(n: int, value: float, ulps: int, outliers: int) -> None:
    # Values of one sign spread by an ulp or a few: numpy's mean is several spreads off, and the
    # corrected two-pass formula then cancels to its rounding unless the deviations are recentred.
    # (Values whose copies sum exactly, such as -2.5, have an exact mean and never showed this.)
    data = np.full(n, value)
    outlier = value + ulps * float(np.spacing(value))
    data[np.linspace(0, n - 1, outliers, dtype=np.int64)] = outlier
    # Two distinct values: the sample variance is (outlier - value)**2 * k * (n - k) / (n * (n - 1)).
    spread = outlier - value  # exact: the two are within a factor of 2
    exact = abs(spread) * math.sqrt(Fraction(outliers * (n - outliers), n * (n - 1)))
    assert math.isclose(analyze_numbers(data).standard_deviation, exact, rel_tol=1e-12)


def test_standard_deviation_of_equal_values_is_zero() -> None:
    # numpy's mean of a million 0.1s is not 0.1, yet the deviation must be exactly nothing.
    assert analyze_numbers(np.full(1_000_000, 0.1)).standard_deviation == 0.0
