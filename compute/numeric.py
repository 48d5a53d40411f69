"""Numeric statistics, exact where it matters.

min, max and median are exact (the median of an even count is the correctly rounded midpoint).
mean and standard_deviation agree with Python's exact ``statistics.mean`` / ``statistics.stdev``
to within 1e-12 relative for every finite input whose true result is finite (a standard deviation
beyond the float range is None): sums are exact (``math.fsum``) unless numpy's faster sum
provably lands within 1e-13, extreme magnitudes are rescaled by powers of two (which is exact)
instead of being allowed to overflow, and deviations are normalised before they are squared so
that neither 1e308 nor subnormal data loses the result; they are recentred on their own mean when
the rounded mean is off by more than their spread (many values an ulp or a few apart).

A few numbers (the usual request) are analysed with plain Python floats, which costs less than
numpy's per-call overhead; magnitudes that would need rescaling take the general path.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence

import numpy as np

from compute.schema import NumericAnalysis

# Below this magnitude a value is kept out of any down-scaling, where it would lose bits.
_TINY = 2.0**-1000
# Above this magnitude x - mean may overflow; deviations are then taken at a quarter scale.
_HUGE = 2.0**1020
# Up to this count Python floats are faster than numpy (bench.kernels measures the cut-over).
_FEW = 160
# Deviations between these magnitudes square without overflow or underflow.
_SQUARABLE = (2.0**-450, 2.0**450)
# numpy's pairwise sum of n values errs by at most (this + log2 n) roundings of sum(|x|) (its
# 8-way unrolled blocks of 128 add ~20 levels); a mean within 1e-13 of exact may use it.
_PAIRWISE_DEPTH = 64
_ROUNDING = 2.0**-53
_MEAN_TOLERANCE = 1e-13
# A variance within this of exact keeps the standard deviation within half of it.
_VARIANCE_TOLERANCE = 1e-13
# Medians of more values than this are selected among the values a sample brackets.
_SELECT_DIRECTLY_UP_TO = 16_384
# A strided sample of 1,025 to 1,088 values. Its rank of the median strays by about 16 (one
# standard deviation), so a bracket of 64 either side rarely misses.
_SAMPLE_SIZE = 1024
_SAMPLE_MARGIN = 64


def analyze_numbers(values: Sequence[float] | np.ndarray) -> NumericAnalysis:
    """The statistics of a list of floats, or of a float64 array (as a large body decodes)."""
    if len(values) <= _FEW:
        few = _analyze_few(values.tolist() if isinstance(values, np.ndarray) else values)
        if few is not None:
            return few
    return _analyze_many(values)


def _analyze_many(values: Sequence[float] | np.ndarray) -> NumericAnalysis:
    """The statistics with numpy, exact at every magnitude."""
    data = values if isinstance(values, np.ndarray) else np.fromiter(values, dtype=np.float64, count=len(values))
    minimum, maximum = float(data.min()), float(data.max())
    mean = _mean(data, minimum, maximum)
    return NumericAnalysis(
        minimum=minimum,
        maximum=maximum,
        mean=mean,
        median=_median(data),
        standard_deviation=_finite_or_none(_sample_stdev(data, mean, minimum, maximum)),
        count=data.size,
    )


def _finite_or_none(value: float) -> float | None:
    # A deviation beyond the float range (only values of both signs near it have one) has no
    # JSON number: the answer says null rather than an infinity.
    return value if math.isfinite(value) else None


def _analyze_few(values: Sequence[float]) -> NumericAnalysis | None:
    """The same statistics on Python floats; None when the magnitudes need the rescaling path."""
    n = len(values)
    ordered = sorted(values)
    try:
        mean = math.fsum(values) / n
    except OverflowError:
        return None
    half = n // 2
    median = float(ordered[half]) if n % 2 else (ordered[half - 1] + ordered[half]) / 2
    if not math.isfinite(median):
        return None
    standard_deviation = 0.0
    if n > 1:
        # Rounding is monotonic, so the largest deviation is the minimum's or the maximum's.
        peak = max(mean - ordered[0], ordered[-1] - mean)
        if peak and not _SQUARABLE[0] <= peak <= _SQUARABLE[1]:
            return None
        deviations = [value - mean for value in values]
        # The two-pass "corrected" algorithm, as below, with exact sums.
        squares = math.fsum(map(operator.mul, deviations, deviations))
        correction = math.fsum(deviations) ** 2 / n
        standard_deviation = math.sqrt(max(squares - correction, 0.0) / (n - 1))
    return NumericAnalysis(
        minimum=float(ordered[0]),
        maximum=float(ordered[-1]),
        mean=mean,
        median=median,
        standard_deviation=standard_deviation,
        count=n,
    )


def _mean(data: np.ndarray, minimum: float, maximum: float) -> float:
    n = data.size
    if minimum >= 0.0 or maximum <= 0.0:
        # Values of one sign do not cancel: the pairwise sum's bound, (64 + log2 n) roundings of
        # sum(|x|), is then relative to the sum itself, and far inside 1e-13.
        with np.errstate(over="ignore"):
            total = float(data.sum())
    else:
        total = _split_sum(data, max(-minimum, maximum))
    if total is not None and math.isfinite(total):
        return total / n
    try:
        return math.fsum(data.tolist()) / n
    except OverflowError:
        # A partial sum left the float range. Sum the large values scaled down by a power of two
        # (exact), and the tiny ones unscaled so they keep every bit.
        large = np.abs(data) >= _TINY
        scale = 2.0 ** -(n.bit_length() + 1)
        large_mean = math.fsum((data[large] * scale).tolist()) / n / scale
        return large_mean + math.fsum(data[~large].tolist()) / n


def _split_sum(data: np.ndarray, peak: float) -> float | None:
    """The sum within 1e-13 of exact, or None where numpy's sums cannot show that (values that
    all but cancel, or sums near the end of the float range).

    Rump, Ogita and Oishi's error-free split: each value is rounded to a multiple of 2**k, and
    those sum exactly in any order, since all of them together stay below 2**(51 + k). What is
    left of each value is at most 2**(k - 1), and exact too; only its sum rounds, and its error
    bound is tiny next to the total unless the values cancel.
    """
    n = data.size
    k = math.frexp(peak)[1] + n.bit_length() - 51  # n * peak < 2**(51 + k)
    if k + 53 > 1023:
        return None
    # Adding 1.5 * 2**(52 + k) moves every value into the binade whose spacing is 2**k.
    shift = 1.5 * 2.0 ** (52 + k)
    rounded = data + shift
    rounded -= shift
    rest = data - rounded
    total = float(rounded.sum()) + float(rest.sum())
    rest_magnitude = float(np.abs(rest, out=rounded).sum())  # rounded is summed: reuse its memory
    error = (_PAIRWISE_DEPTH + n.bit_length()) * _ROUNDING * rest_magnitude
    return total if error <= _MEAN_TOLERANCE * abs(total) else None


def _median(data: np.ndarray) -> float:
    if data.size == 1:
        return float(data[0])
    half = data.size // 2
    low, high = _sorted_pair(data, half - 1)
    if data.size % 2:
        return high
    midpoint = (low + high) / 2
    # Only two values beyond half the float range overflow here; their halves are exact.
    return midpoint if math.isfinite(midpoint) else low / 2 + high / 2


def _sorted_pair(data: np.ndarray, rank: int) -> tuple[float, float]:
    """The values at positions ``rank`` and ``rank + 1`` of ``data`` sorted.

    Always a pair, even for an odd count's median: numpy selects several ranks with introselect
    and a single rank with its SIMD quickselect, whose AVX-512 build is 7 x slower than its AVX2
    one on AMD Zen 4 (a microcoded compress-store). Introselect, though, slows from 2.5 to 10 ns
    a value past about 20,000 values, so a longer array is first narrowed to the few values
    around the pair.
    """
    if data.size > _SELECT_DIRECTLY_UP_TO:
        # Floyd and Rivest: a strided sample brackets the pair; one pass counts the values below
        # the bracket, another marks the values inside it. The pair lies among those unless the
        # sample misled, or they are too many to gain from (then the whole array is partitioned).
        sample = data[:: data.size // _SAMPLE_SIZE]
        at = rank * sample.size // data.size
        ends = [max(at - _SAMPLE_MARGIN, 0), min(at + _SAMPLE_MARGIN, sample.size - 1)]
        low, high = np.partition(sample, ends)[ends]
        below = int(np.count_nonzero(data < low))
        inside = (data >= low) & (data <= high)
        count = int(np.count_nonzero(inside))
        if below <= rank and rank + 2 <= below + count:
            if low == high:
                return float(low), float(high)
            if count <= data.size // 2:
                return _sorted_pair(data.compress(inside), rank - below)
    pair = np.partition(data, [rank, rank + 1])
    return float(pair[rank]), float(pair[rank + 1])


def _sample_stdev(data: np.ndarray, mean: float, minimum: float, maximum: float) -> float:
    n = data.size
    if minimum == maximum:
        # One value, or equal ones: they deviate by exactly nothing, however the mean rounded.
        return 0.0
    prescale = 0.25 if max(-minimum, maximum) > _HUGE else 1.0
    deviations = data * prescale
    deviations -= mean * prescale
    # Rounding is monotonic, so the largest deviation is the minimum's or the maximum's (and,
    # the values differing, it is not 0).
    peak = max(mean * prescale - minimum * prescale, maximum * prescale - mean * prescale)
    # Bring the largest deviation into [0.5, 1): squares can neither overflow nor vanish.
    exponent = math.frexp(peak)[1]
    np.ldexp(deviations, -exponent, out=deviations)
    # All squares are positive, so numpy's pairwise sum is accurate; the second term corrects
    # for the rounding of the mean (the two-pass "corrected" algorithm).
    squares = float((deviations * deviations).sum())
    total = float(deviations.sum())
    centred_squares = squares - total * total / n
    # Their difference errs by at most this: the sum of squares by its pairwise bound, the
    # correction (by Cauchy-Schwarz) by twice that. Values an ulp or a few apart have a mean off
    # by several times their spread: the two terms then all but cancel, leaving their rounding.
    error = 3 * (_PAIRWISE_DEPTH + n.bit_length()) * _ROUNDING * squares
    if error > _VARIANCE_TOLERANCE * centred_squares:
        # Centre the deviations on their own mean (the mean plus total / n, carried in two
        # parts): the squares then sum to about the centred squares, and the bound holds.
        deviations -= total / n
        squares = float((deviations * deviations).sum())
        total = float(deviations.sum())
        centred_squares = squares - total * total / n
    variance = max(centred_squares, 0.0) / (n - 1)
    return math.ldexp(math.sqrt(variance), exponent) / prescale
