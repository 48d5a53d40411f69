"""The analysis kernels against the statistics module and naive implementations: speed and accuracy.

    python -m bench.kernels                 # numeric and text kernels, sizes 10 .. 1,000,000
    python -m bench.kernels --quick         # tiny sizes: checks the bench works

Numeric accuracy is the relative error of mean and standard deviation against
``statistics.mean`` / ``statistics.stdev`` (exact, then rounded) on data with a large common
offset, where naive sums lose digits. Text accuracy is whether each implementation's counts
equal the kernel's, which follows docs/api.md.

Each kernel has a short path (Python floats, regular expressions) and a vectorised one (numpy),
and so has decoding (msgspec, or simdjson into an array); the cut-over table times both around
the switch and sets it against the size in the code. The last table times numbers near the ends
of the float range, which msgspec alone converts slowly, against the service's decoding.
"""

from __future__ import annotations

import argparse
import functools
import math
import random
import re
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench._common import make_body, make_text, markdown_table, print_header, pyplot, write_outputs

NUMBER_SIZES = (10, 1_000, 100_000, 1_000_000)
TEXT_SIZES = (160, 10_000, 1_000_000, 5_000_000)
# Sizes around each kernel's switch from its short path to its vectorised one.
NUMBER_CUTOVER_SIZES = (16, 32, 64, 96, 128, 160, 192, 256, 384, 512)
TEXT_CUTOVER_SIZES = (500, 1_000, 1_250, 1_500, 1_750, 2_000, 2_500, 3_000, 4_000)
BODY_CUTOVER_SIZES = (1_024, 2_048, 3_072, 4_096, 6_144, 8_192, 16_384)
# Numbers near the ends of the float range (msgspec converts them slowly) and a plain one.
EDGE_NUMBERS = ("1.5", "1e300", "1.7976931348623157e308", "2.5e-310")
EDGE_NUMBER_COUNT = 100_000
# statistics.stdev is exact (fractions): beyond this count one call takes many seconds here.
STATISTICS_LIMIT = 100_000


def offset_data(count: int, seed: int = 3) -> list[float]:
    """Values around 1e9 with unit spread: the sum of squares of naive variance cancels badly."""
    rng = random.Random(seed)
    return [1e9 + rng.gauss(0, 1) for _ in range(count)]


def centred_data(count: int, seed: int = 5) -> list[float]:
    """Values of both signs around 0, whose sums cancel: the numeric kernel's dearer mean."""
    rng = random.Random(seed)
    return [rng.gauss(0, 1e4) for _ in range(count)]


def naive_numbers(values: list[float]) -> tuple[float, float, float, float, float]:
    n = len(values)
    mean = sum(values) / n
    ordered = sorted(values)
    median = ordered[n // 2] if n % 2 else (ordered[n // 2 - 1] + ordered[n // 2]) / 2
    # The one-pass textbook formula: sum of squares minus n * mean squared.
    variance = (sum(v * v for v in values) - n * mean * mean) / (n - 1)
    return min(values), max(values), mean, median, math.sqrt(max(variance, 0.0))


def statistics_numbers(values: list[float]) -> tuple[float, float, float, float, float]:
    return min(values), max(values), statistics.mean(values), statistics.median(values), statistics.stdev(values)


def kernel_numbers(values: list[float]) -> tuple[float, float, float, float, float]:
    from compute.numeric import analyze_numbers

    result = analyze_numbers(values)
    return result.minimum, result.maximum, result.mean, result.median, result.standard_deviation


def naive_text(text: str) -> tuple[int, int, int, int, int]:
    """The seed's regular expressions."""
    return (
        len(text.split()),
        len(text),
        len(re.sub(r"\s", "", text)),
        len([s for s in re.split(r"[.!?]+", text) if s.strip()]),
        len([p for p in re.split(r"\n\s*\n", text) if p.strip()]),
    )


def kernel_text(text: str) -> tuple[int, int, int, int, int]:
    from msgspec.structs import astuple

    from compute.text import analyze_text

    return astuple(analyze_text(text))


def best_time_ms(function: Callable[[], object], budget_s: float) -> float:
    """Best mean per call over as many batches as fit in ``budget_s`` (at least 3): the
    least-disturbed run. A batch lasts at least 0.2 ms, so microsecond calls are not timer noise."""
    started = time.perf_counter()
    function()
    batch = max(1, math.ceil(2e-4 / max(time.perf_counter() - started, 1e-7)))
    best = math.inf
    batches = 0
    deadline = time.perf_counter() + budget_s
    while batches < 3 or time.perf_counter() < deadline:
        started = time.perf_counter()
        for _ in range(batch):
            function()
        best = min(best, (time.perf_counter() - started) / batch)
        batches += 1
    return best * 1000


@dataclass(frozen=True)
class Switch:
    """Where a kernel leaves its short path for its vectorised one, on one kind of data."""

    kernel: str
    data: str
    short: Callable[[Any], object]
    vectorised: Callable[[Any], object]
    make: Callable[[int], object]
    vectorised_from: int  # the first size the code sends to the vectorised path


def body_of_about(size: int, text_per_number: int | None) -> bytes:
    """A payload of about ``size`` bytes: ``text_per_number`` characters of text per number, or
    160 characters of text in all (None)."""

    def body(numbers: int) -> bytes:
        return make_body(numbers, text_per_number * numbers if text_per_number else 160)

    empty = len(body(0))
    per_number = (len(body(1_000)) - empty) / 1_000
    return body(max(1, round((size - empty) / per_number)))


def analysed_after(decode: Callable[[bytes, Any], Any]) -> Callable[[bytes], object]:
    """The whole analysis of a body decoded by ``decode``: decoding also decides the numbers' type."""
    from compute.numeric import analyze_numbers
    from compute.schema import Limits
    from compute.text import analyze_text

    limits = Limits()

    def analyse(body: bytes) -> object:
        numbers, text = decode(body, limits)
        return analyze_numbers(numbers), analyze_text(text)

    return analyse


def switches() -> tuple[Switch, ...]:
    from compute import decoding, numeric
    from compute import text as text_kernel

    few, many, from_count = numeric._analyze_few, numeric._analyze_many, numeric._FEW + 1
    exact, bulk = analysed_after(decoding._decode_exactly), analysed_after(decoding._decode_in_bulk)
    return (
        Switch("numbers", "1e9 + N(0, 1)", few, many, offset_data, from_count),
        Switch("numbers", "N(0, 1e4)", few, many, centred_data, from_count),
        Switch(
            "text",
            "prose",
            text_kernel._analyze_short,
            text_kernel._analyze_long,
            make_text,
            text_kernel._VECTORISED_FROM,
        ),
        Switch(
            "decoding",
            "numbers + 10 x text",
            exact,
            bulk,
            functools.partial(body_of_about, text_per_number=10),
            decoding.BULK_DECODE_FROM,
        ),
        Switch(
            "decoding",
            "numbers + 160 chars",
            exact,
            bulk,
            functools.partial(body_of_about, text_per_number=None),
            decoding.BULK_DECODE_FROM,
        ),
    )


def edge_number_rows(count: int, budget_s: float) -> list[dict[str, object]]:
    """Decoding ``count`` copies of each number: msgspec alone against the service's decoding, for
    a valid body and for one that ends in an error (which simdjson refuses, so msgspec judges it)."""
    from compute import decoding
    from compute.schema import Limits

    limits = Limits()
    msgspec_alone = decoding.decoder_for(limits).decode

    def refusing(decode: Callable[..., object], body: bytes) -> Callable[[], object]:
        def call() -> object:
            try:
                return decode(body)
            except (ValueError, TypeError):  # msgspec's errors and the service's both derive from these
                return None

        return call

    rows: list[dict[str, object]] = []
    for number in EDGE_NUMBERS:
        numbers = ", ".join([number] * count)
        for ending, body in (
            ("valid", f'{{"numbers": [{numbers}], "text": "t"}}'.encode()),
            ("error at the end", f'{{"numbers": [{numbers}, true], "text": "t"}}'.encode()),
        ):
            row: dict[str, object] = {
                "number": number,
                "body": ending,
                "bytes": len(body),
                "msgspec_us": best_time_ms(refusing(msgspec_alone, body), budget_s) * 1000 / count,
                "service_us": best_time_ms(
                    refusing(functools.partial(decoding.decode_payload, limits=limits), body), budget_s
                )
                * 1000
                / count,
            }
            rows.append(row)
            print(
                f"edge numbers {number} ({ending}, {len(body):,} B): msgspec alone {row['msgspec_us']:.3f} us, "
                f"the service's decoding {row['service_us']:.3f} us per number"
            )
    return rows


def cutover_rows(
    sizes: dict[str, tuple[int, ...]], budget_s: float
) -> tuple[list[dict[str, object]], list[dict[str, object]]]:
    """Both paths of each kernel timed around its switch, and where the vectorised one takes over."""
    rows: list[dict[str, object]] = []
    summary: list[dict[str, object]] = []
    for switch in switches():
        ladder = []
        for size in sizes[switch.kernel]:
            argument = switch.make(size)
            row: dict[str, object] = {
                "kernel": switch.kernel,
                "data": switch.data,
                "size": size,
                "short_us": best_time_ms(functools.partial(switch.short, argument), budget_s) * 1000,
                "vectorised_us": best_time_ms(functools.partial(switch.vectorised, argument), budget_s) * 1000,
            }
            ladder.append(row)
            print(
                f"cut-over {switch.kernel} ({switch.data}) {size:>6,}: short path {row['short_us']:.1f} us, "
                f"vectorised {row['vectorised_us']:.1f} us"
            )
        measured = takes_over_at(ladder)
        summary.append(
            {"kernel": switch.kernel, "data": switch.data, "measured": measured, "in_code": switch.vectorised_from}
        )
        print(
            f"cut-over {switch.kernel} ({switch.data}): vectorised faster from {measured}, "
            f"in the code from {switch.vectorised_from}"
        )
        rows += ladder
    return rows, summary


def takes_over_at(ladder: list[dict[str, object]]) -> int | None:
    """The smallest size from which the vectorised path is faster at every larger size measured."""
    taken_over = None
    for row in reversed(ladder):
        if row["vectorised_us"] >= row["short_us"]:  # type: ignore[operator]
            break
        taken_over = row["size"]
    return taken_over  # type: ignore[return-value]


def relative_error(value: float, exact: float) -> float:
    return abs(value - exact) / abs(exact) if exact else abs(value)


def numeric_rows(sizes: tuple[int, ...], budget_s: float) -> list[dict[str, object]]:
    rows = []
    for count in sizes:
        values = offset_data(count)
        row: dict[str, object] = {"count": count}
        row["kernel_ms"] = best_time_ms(lambda values=values: kernel_numbers(values), budget_s)
        row["naive_ms"] = best_time_ms(lambda values=values: naive_numbers(values), budget_s)
        if count <= STATISTICS_LIMIT:
            started = time.perf_counter()
            exact = statistics_numbers(values)
            row["statistics_ms"] = (time.perf_counter() - started) * 1000  # one call: it is slow
            kernel, naive = kernel_numbers(values), naive_numbers(values)
            for name, result in (("kernel", kernel), ("naive", naive)):
                row[f"{name}_mean_error"] = relative_error(result[2], exact[2])
                row[f"{name}_stdev_error"] = relative_error(result[4], exact[4])
                row[f"{name}_median_exact"] = result[3] == exact[3]
        rows.append(row)
        print(
            f"numbers {count:>9,}: kernel {row['kernel_ms']:.3f} ms, naive {row['naive_ms']:.3f} ms, "
            f"statistics {row.get('statistics_ms', float('nan')):.3f} ms; stdev error kernel "
            f"{row.get('kernel_stdev_error', float('nan')):.1e} naive {row.get('naive_stdev_error', float('nan')):.1e}"
        )
    return rows


def text_rows(sizes: tuple[int, ...], budget_s: float) -> list[dict[str, object]]:
    rows = []
    for size in sizes:
        text = make_text(size)
        kernel, naive = kernel_text(text), naive_text(text)
        row: dict[str, object] = {
            "chars": size,
            "kernel_ms": best_time_ms(lambda text=text: kernel_text(text), budget_s),
            "naive_ms": best_time_ms(lambda text=text: naive_text(text), budget_s),
            "kernel_counts": kernel,
            "naive_counts": naive,
            "naive_agrees": kernel == naive,
        }
        rows.append(row)
        print(
            f"text {size:>9,} chars: kernel {row['kernel_ms']:.3f} ms, naive {row['naive_ms']:.3f} ms, "
            f"counts kernel {kernel} naive {naive}"
        )
    return rows


def _format(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.2e}" if value and (abs(value) < 1e-3 or abs(value) >= 1e5) else f"{value:.3f}"
    return "-" if value is None else str(value)


def report(
    out: Path,
    numeric: list[dict],
    text: list[dict],
    cutover: dict[str, list],
    edges: list[dict],
    machine: dict,
    settings: dict,
) -> list[Path]:
    numeric_table = markdown_table(
        [
            "numbers",
            "kernel ms",
            "naive ms",
            "statistics ms",
            "mean error kernel / naive",
            "stdev error kernel / naive",
            "median exact kernel / naive",
        ],
        [
            [
                f"{row['count']:,}",
                _format(row["kernel_ms"]),
                _format(row["naive_ms"]),
                _format(row.get("statistics_ms")),
                f"{_format(row.get('kernel_mean_error'))} / {_format(row.get('naive_mean_error'))}",
                f"{_format(row.get('kernel_stdev_error'))} / {_format(row.get('naive_stdev_error'))}",
                f"{row.get('kernel_median_exact', '-')} / {row.get('naive_median_exact', '-')}",
            ]
            for row in numeric
        ],
    )
    text_table = markdown_table(
        [
            "characters",
            "kernel ms",
            "naive ms",
            "kernel counts (words, chars, no-space, sentences, paragraphs)",
            "naive counts",
            "naive agrees",
        ],
        [
            [
                f"{row['chars']:,}",
                _format(row["kernel_ms"]),
                _format(row["naive_ms"]),
                row["kernel_counts"],
                row["naive_counts"],
                row["naive_agrees"],
            ]
            for row in text
        ],
    )
    cutover_table = markdown_table(
        ["kernel", "data", "size", "short path us", "vectorised us"],
        [
            [row["kernel"], row["data"], f"{row['size']:,}", f"{row['short_us']:.1f}", f"{row['vectorised_us']:.1f}"]
            for row in cutover["rows"]
        ],
    )
    cutover_summary = markdown_table(
        ["kernel", "data", "vectorised faster from", "vectorised in the code from"],
        [
            [found["kernel"], found["data"], _format(found["measured"]), found["in_code"]]
            for found in cutover["summary"]
        ],
    )
    edge_table = markdown_table(
        ["number", "body", "bytes", "msgspec alone us per number", "the service's decoding us per number"],
        [
            [
                f"`{row['number']}`",
                row["body"],
                f"{row['bytes']:,}",
                f"{row['msgspec_us']:.3f}",
                f"{row['service_us']:.3f}",
            ]
            for row in edges
        ],
    )
    markdown = (
        f"### Numeric kernel (data: 1e9 + N(0, 1))\n\n{numeric_table}\n\n"
        f"### Text kernel (prose-like ASCII)\n\n{text_table}\n\n"
        f"### Short path or vectorised (best mean per call)\n\nSizes are counts of numbers, characters of "
        "text, and bytes of body. For decoding the short path is msgspec and the vectorised one simdjson, "
        f"each timed with the whole analysis that follows it.\n\n{cutover_summary}\n\n{cutover_table}\n\n"
        f"### Numbers near the ends of the float range (decoding only, best mean)\n\n{edge_table}"
    )
    paths = write_outputs(
        out,
        "kernels",
        markdown,
        {
            "machine": machine,
            "settings": settings,
            "numeric": numeric,
            "text": text,
            "cutover": cutover,
            "edges": edges,
        },
    )
    plt = pyplot()
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for key, label in (("kernel_ms", "kernel"), ("naive_ms", "naive"), ("statistics_ms", "statistics module")):
        points = [(row["count"], row[key]) for row in numeric if key in row]
        if points:
            left.plot(*zip(*points, strict=False), marker="o", label=label)
    for key, label in (("kernel_ms", "kernel"), ("naive_ms", "naive (seed regexes)")):
        right.plot([row["chars"] for row in text], [row[key] for row in text], marker="o", label=label)
    for axis, xlabel, title in ((left, "numbers", "numeric"), (right, "characters", "text")):
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xlabel(xlabel)
        axis.set_ylabel("ms per call (best)")
        axis.set_title(title)
        axis.grid(True, which="both", alpha=0.3)
        axis.legend()
    figure.tight_layout()
    png = out / "kernels.png"
    figure.savefig(png, dpi=90)
    plt.close(figure)
    return [*paths, png]


def _counts(text: str) -> tuple[int, ...]:
    """A command-line list of sizes: "10,1000"."""
    return tuple(int(value) for value in text.split(","))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.kernels", description=__doc__.split("\n\n")[0])
    sizes = {"type": _counts, "metavar": "N,N,..."}
    parser.add_argument("--numbers", default=NUMBER_SIZES, help="counts", **sizes)
    parser.add_argument("--text", default=TEXT_SIZES, help="character counts", **sizes)
    parser.add_argument(
        "--cutover-numbers", default=NUMBER_CUTOVER_SIZES, help="counts around the numeric switch to numpy", **sizes
    )
    parser.add_argument(
        "--cutover-text", default=TEXT_CUTOVER_SIZES, help="character counts around the text switch to numpy", **sizes
    )
    parser.add_argument(
        "--cutover-bodies", default=BODY_CUTOVER_SIZES, help="body bytes around the switch to simdjson", **sizes
    )
    parser.add_argument(
        "--edge-numbers", type=int, default=EDGE_NUMBER_COUNT, help="count of each number near the float range's ends"
    )
    parser.add_argument("--budget", type=float, default=1.0, help="seconds of repeats per timing (best quoted)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes and budget")
    parser.add_argument("--out", type=Path, default=Path("bench-results/kernels"))
    args = parser.parse_args(argv)
    if args.quick:
        args.numbers, args.text, args.budget = (10, 1_000), (160, 10_000), 0.05
        args.cutover_numbers, args.cutover_text, args.cutover_bodies = (16, 512), (500, 4_000), (1_024, 16_384)
        args.edge_numbers = 1_000
    settings = {
        "numbers": args.numbers,
        "text": args.text,
        "cutover_numbers": args.cutover_numbers,
        "cutover_text": args.cutover_text,
        "cutover_bodies": args.cutover_bodies,
        "edge_numbers": args.edge_numbers,
        "budget_s": args.budget,
    }
    machine = print_header("bench.kernels: kernels vs statistics module and naive code", settings)
    numeric = numeric_rows(args.numbers, args.budget)
    text = text_rows(args.text, args.budget)
    # A fifth of the budget per timing: the ladder has many short calls.
    cutover_sizes = {"numbers": args.cutover_numbers, "text": args.cutover_text, "decoding": args.cutover_bodies}
    cutover_table, cutover_summary = cutover_rows(cutover_sizes, args.budget / 5)
    cutover = {"rows": cutover_table, "summary": cutover_summary}
    edges = edge_number_rows(args.edge_numbers, args.budget / 5)
    for path in report(args.out, numeric, text, cutover, edges, machine, settings):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
