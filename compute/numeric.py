"""Numeric statistics, exact where it matters.

min, max and median are exact (the median of an even count is the correctly rounded midpoint).
mean and standard_deviation agree with Python's exact ``statistics.mean`` / ``statistics.stdev``
to within 1e-12 relative for every finite input whose true result is finite: sums are exact
(``math.fsum``), extreme magnitudes are rescaled by powers of two (which is exact) instead of
being allowed to overflow, and deviations are normalised before they are squared so that
neither 1e308 nor subnormal data loses the result.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from compute.schema import NumericAnalysis

# Below this magnitude a value is kept out of any down-scaling, where it would lose bits.
_TINY = 2.0**-1000
# Above this magnitude x - mean may overflow; deviations are then taken at a quarter scale.
_HUGE = 2.0**1020


def analyze_numbers(values: Sequence[float]) -> NumericAnalysis:
    data = np.fromiter(values, dtype=np.float64, count=len(values))
    mean = _mean(values, data)
    return NumericAnalysis(
        minimum=float(data.min()),
        maximum=float(data.max()),
        mean=mean,
        median=_median(data),
        standard_deviation=_sample_stdev(data, mean),
        count=data.size,
    )


def _mean(values: Sequence[float], data: np.ndarray) -> float:
    n = data.size
    try:
        return math.fsum(values) / n
    except OverflowError:
        # A partial sum left the float range. Sum the large values scaled down by a power of two
        # (exact), and the tiny ones unscaled so they keep every bit.
        large = np.abs(data) >= _TINY
        scale = 2.0 ** -(n.bit_length() + 1)
        large_mean = math.fsum((data[large] * scale).tolist()) / n / scale
        return large_mean + math.fsum(data[~large].tolist()) / n


def _median(data: np.ndarray) -> float:
    half = data.size // 2
    if data.size % 2:
        return float(np.partition(data, half)[half])
    pair = np.partition(data, [half - 1, half])
    low, high = float(pair[half - 1]), float(pair[half])
    midpoint = (low + high) / 2
    # Only two values beyond half the float range overflow here; their halves are exact.
    return midpoint if math.isfinite(midpoint) else low / 2 + high / 2


def _sample_stdev(data: np.ndarray, mean: float) -> float:
    n = data.size
    if n == 1:
        return 0.0
    prescale = 0.25 if float(np.max(np.abs(data))) > _HUGE else 1.0
    deviations = data * prescale - mean * prescale
    peak = float(np.max(np.abs(deviations)))
    if peak == 0.0:
        return 0.0
    # Bring the largest deviation into [0.5, 1): squares can neither overflow nor vanish.
    exponent = math.frexp(peak)[1]
    deviations = np.ldexp(deviations, -exponent)
    # All squares are positive, so numpy's pairwise sum is accurate; the second term corrects
    # for the rounding of the mean (the two-pass "corrected" algorithm).
    squares = float(np.sum(deviations * deviations))
    correction = float(np.sum(deviations)) ** 2 / n
    variance = max(squares - correction, 0.0) / (n - 1)
    return math.ldexp(math.sqrt(variance), exponent) / prescale
