"""Where should an analysis run? inline vs thread pool vs process pool vs adaptive, by payload size.

Two views of the same question:

    in-process  compute.dispatch.Dispatcher called directly (no HTTP, a no-op observer):
                the cost of each dispatch mode by itself.
    http        the real service (DISPATCH=inline|thread|process|adaptive, one server each,
                POOL_WORKERS=--workers, 2 by default) driven by wrk; the modes are alternated
                run by run.

From both it reads the adaptive cut-over (INLINE_THRESHOLD_BYTES): the body size where the
process pool starts beating inline at the concurrency that keeps both workers busy. From the
in-process view at one client it reads how large a lone body may be analysed inline
(INLINE_ALONE_THRESHOLD_BYTES): the size whose analysis holds the event loop for the budget
that P3 allows /health.

    python -m bench.pools                      # both views, all sizes, tables + plots
    python -m bench.pools --target p3          # /health p99 while 8 clients post 1M numbers
    python -m bench.pools --target p4          # peak RSS with 32 clients posting 1M numbers
    python -m bench.pools --target p5          # process pool vs thread pool, CPU-heavy payload
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import math
import os
import statistics
import sys
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

from bench._common import (
    SIZES,
    Server,
    Wrk,
    all_running,
    alternate,
    make_body,
    markdown_table,
    print_header,
    pyplot,
    running,
    service_command,
    size_label,
    verdict,
    write_outputs,
)
from bench.proctree import PeakRss, cpu_seconds, descendants, thread_cpu_seconds, tree_rss_bytes
from service.config import Settings

MODES = ("inline", "thread", "process", "adaptive")
# The pool sizes plus one in each decade where the cut-over has fallen (before and after the
# kernels and the hand-off got faster).
POOL_SIZES = tuple(sorted({*SIZES, (3_000, 30_000), (30_000, 300_000)}))
# The pool size the matrix and P5 are measured with, unless --workers says otherwise.
WORKERS = 2
P3_HEALTH_P99_MS = 10.0
# A lone request may hold the event loop as long as P3 lets /health wait.
LONE_HOLD_BUDGET_MS = P3_HEALTH_P99_MS
P4_RSS_LIMIT = 1024**3
P5_SPEEDUP = 1.6
HEAVY = (1_000_000, 5_000_000)
P5_PAYLOAD = (100_000, 1_000_000)


class _NoObserver:
    def job_done(self, mode, outcome, seconds) -> None:  # type: ignore[no-untyped-def]
        pass

    def pending_changed(self, pending) -> None:  # type: ignore[no-untyped-def]
        pass

    def handed_off_changed(self, jobs, workers) -> None:  # type: ignore[no-untyped-def]
        pass

    def shed_one(self) -> None:
        pass

    def pool_restarted(self) -> None:
        pass


def _percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, math.ceil(fraction * len(ordered)) - 1)]


# ----------------------------------------------------------------------------------- in-process


async def _drive(dispatcher, body: bytes, concurrency: int, seconds: float) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """``concurrency`` callers analyse ``body`` back to back until ``seconds`` have passed (once at least)."""
    mode = dispatcher.mode_for(len(body))
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def caller() -> None:
        while True:
            started = time.perf_counter()
            with dispatcher.reserve(mode):
                # The body arriving: in the service, other requests take their places meanwhile.
                await asyncio.sleep(0)
                await dispatcher.analyze(body, mode)
            latencies.append(time.perf_counter() - started)
            if started >= deadline:
                return
            # Let the other callers in: an inline analysis never yields, so without this one caller
            # would run all its jobs first. Inline latency is then service time, not queueing.
            await asyncio.sleep(0)

    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    return {
        "rps": len(latencies) / elapsed,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": _percentile(latencies, 0.99) * 1000,
        "jobs": len(latencies),
    }


@asynccontextmanager
async def _started_dispatchers(  # type: ignore[type-arg]
    modes: Sequence[str], threshold: int, alone_threshold: int, workers: int
) -> AsyncIterator[dict]:
    """One started Dispatcher per mode (no shedding, no compute timeout); shut down afterwards."""
    from compute.dispatch import Dispatch, Dispatcher
    from compute.schema import Limits

    dispatchers = {
        mode: Dispatcher(
            Dispatch(mode),
            Limits(),
            workers=workers,
            max_pending=1_000,
            inline_threshold_bytes=threshold,
            inline_alone_threshold_bytes=alone_threshold,
            compute_timeout_s=600,
            observer=_NoObserver(),
        )
        for mode in modes
    }
    for dispatcher in dispatchers.values():
        await dispatcher.start()
    try:
        yield dispatchers
    finally:
        for dispatcher in dispatchers.values():
            await dispatcher.shutdown()


async def _in_process(sizes, concurrencies, seconds: float, repeats: int, args: argparse.Namespace) -> list[dict]:  # type: ignore[no-untyped-def]
    rows = []
    async with _started_dispatchers(MODES, args.threshold, args.alone_threshold, args.workers) as dispatchers:
        for numbers, text in sizes:
            body = make_body(numbers, text)
            for concurrency in concurrencies:
                for dispatcher in dispatchers.values():  # warm-up
                    await _drive(dispatcher, body, concurrency, 0)
                runs: dict[str, list[dict[str, float]]] = {mode: [] for mode in MODES}
                for repeat in range(repeats):
                    for mode in MODES if repeat % 2 == 0 else reversed(MODES):
                        runs[mode].append(await _drive(dispatchers[mode], body, concurrency, seconds))
                for mode in MODES:
                    row = {
                        "size": size_label(numbers, text),
                        "body_bytes": len(body),
                        "concurrency": concurrency,
                        "mode": mode,
                        **{
                            key: statistics.median(run[key] for run in runs[mode])
                            for key in ("rps", "p50_ms", "p99_ms", "jobs")
                        },
                    }
                    rows.append(row)
                print(
                    f"in-process {size_label(numbers, text):>10} c={concurrency}: "
                    + ", ".join(
                        f"{row['mode']} {row['rps']:.1f}/s p99 {row['p99_ms']:.1f} ms" for row in rows[-len(MODES) :]
                    )
                )
    return rows


# ------------------------------------------------------------------------------------------ http


def service(dispatch: str, cpus: str | None, workers: int, **env: str) -> Server:
    return Server(service_command(), env={"DISPATCH": dispatch, "POOL_WORKERS": str(workers), **env}, cpus=cpus)


def _http(sizes, concurrencies, seconds: float, repeats: int, args: argparse.Namespace) -> list[dict]:  # type: ignore[no-untyped-def]
    thresholds = {
        "INLINE_THRESHOLD_BYTES": str(args.threshold),
        "INLINE_ALONE_THRESHOLD_BYTES": str(args.alone_threshold),
    }
    servers = {mode: service(mode, args.server_cpus, args.workers, **thresholds) for mode in MODES}
    rows = []
    with Wrk(args.client_cpus) as wrk, all_running(list(servers.values())):
        for numbers, text in sizes:
            body = make_body(numbers, text)
            for concurrency in concurrencies:
                results = alternate(wrk, servers, body, connections=concurrency, seconds=seconds, repeats=repeats)
                for mode in MODES:
                    result = results[mode]
                    rows.append(
                        {
                            "size": size_label(numbers, text),
                            "body_bytes": len(body),
                            "concurrency": concurrency,
                            "mode": mode,
                            "rps": result.ok_rps,
                            "p50_ms": result.p50_ms,
                            "p99_ms": result.p99_ms,
                            "non_2xx": result.non_2xx,
                            "cpu_ms_per_request": result.cpu_ms_per_request,
                        }
                    )
                print(
                    f"http {size_label(numbers, text):>10} c={concurrency}: "
                    + ", ".join(
                        f"{row['mode']} {row['rps']:.1f}/s p99 {row['p99_ms']:.1f} ms" for row in rows[-len(MODES) :]
                    )
                )
    return rows


# ------------------------------------------------------------------------------------ threshold


def crossover(rows: list[dict], concurrency: int) -> dict[str, object]:
    """Where the process pool starts to beat inline in throughput at ``concurrency``.

    The threshold suggested is the geometric middle of the last body size where inline won and
    the first where the process pool won (and stays ahead for every larger size).
    """
    by_size: dict[int, dict[str, float]] = {}
    for row in rows:
        if row["concurrency"] == concurrency and row["mode"] in ("inline", "process"):
            by_size.setdefault(row["body_bytes"], {})[row["mode"]] = row["rps"]
    sizes = sorted(size for size, modes in by_size.items() if len(modes) == 2)
    process_wins = [by_size[size]["process"] > by_size[size]["inline"] for size in sizes]
    first = next((i for i in range(len(sizes)) if all(process_wins[i:])), None)
    if first is None or not sizes:
        return {
            "concurrency": concurrency,
            "inline_wins_up_to": sizes[-1] if sizes else None,
            "process_wins_from": None,
            "suggested_threshold_bytes": None,
        }
    if first == 0:
        return {
            "concurrency": concurrency,
            "inline_wins_up_to": None,
            "process_wins_from": sizes[0],
            "suggested_threshold_bytes": 0,
        }
    low, high = sizes[first - 1], sizes[first]
    middle = math.sqrt(low * high)
    suggested = 1024 * 2 ** round(math.log2(middle / 1024))  # a power-of-two KiB
    return {
        "concurrency": concurrency,
        "inline_wins_up_to": low,
        "process_wins_from": high,
        "suggested_threshold_bytes": suggested,
    }


def lone_inline_limit(rows: list[dict]) -> dict[str, int | None]:
    """The body size whose inline analysis at one client takes LONE_HOLD_BUDGET_MS.

    Interpolated linearly between the sizes measured (analysis time grows with the body); the
    suggestion is the nearest power-of-two KiB, as for the other threshold: the budget is a
    bound to stay near, and the measured size moves with the host's noise.
    """
    points = sorted(
        (row["body_bytes"], row["p50_ms"]) for row in rows if row["mode"] == "inline" and row["concurrency"] == 1
    )
    for (small, small_ms), (large, large_ms) in itertools.pairwise(points):
        if small_ms <= LONE_HOLD_BUDGET_MS < large_ms:
            limit = round(small + (large - small) * (LONE_HOLD_BUDGET_MS - small_ms) / (large_ms - small_ms))
            return {"budget_reached_at": limit, "suggested_bytes": 1024 * 2 ** round(math.log2(limit / 1024))}
    return {"budget_reached_at": None, "suggested_bytes": None}


def _table(rows: list[dict]) -> str:
    sizes = list(dict.fromkeys((row["size"], row["body_bytes"]) for row in rows))
    concurrencies = sorted({row["concurrency"] for row in rows})
    lookup = {(row["size"], row["concurrency"], row["mode"]): row for row in rows}
    table_rows = []
    for size, body_bytes in sizes:
        for concurrency in concurrencies:
            cells = [size, f"{body_bytes:,}", concurrency]
            for mode in MODES:
                row = lookup.get((size, concurrency, mode))
                cells.append(f"{row['rps']:.1f} / {row['p50_ms']:.1f} / {row['p99_ms']:.1f}" if row else "-")
            table_rows.append(cells)
    return markdown_table(
        ["payload", "body bytes", "clients", *[f"{mode} req/s / p50 / p99 ms" for mode in MODES]], table_rows
    )


def _plot(rows: list[dict], title: str, path: Path) -> None:
    plt = pyplot()
    concurrencies = sorted({row["concurrency"] for row in rows})
    figure, axes = plt.subplots(2, len(concurrencies), figsize=(5 * len(concurrencies), 7), squeeze=False)
    for column, concurrency in enumerate(concurrencies):
        for mode in MODES:
            points = sorted(
                (row["body_bytes"], row["rps"], row["p99_ms"])
                for row in rows
                if row["concurrency"] == concurrency and row["mode"] == mode
            )
            if not points:
                continue
            sizes, rps, p99 = zip(*points, strict=False)
            axes[0][column].plot(sizes, rps, marker="o", label=mode)
            axes[1][column].plot(sizes, p99, marker="o", label=mode)
        axes[0][column].set_title(f"{title}, {concurrency} client(s)")
        axes[0][column].set_ylabel("requests/s")
        axes[1][column].set_ylabel("p99 latency ms")
        for axis in (axes[0][column], axes[1][column]):
            axis.set_xscale("log")
            axis.set_yscale("log")
            axis.set_xlabel("body bytes")
            axis.grid(True, which="both", alpha=0.3)
            axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


# --------------------------------------------------------------------------------------- targets


def target_p3(args: argparse.Namespace) -> tuple[dict, bool]:
    body = make_body(*HEAVY)
    with Wrk(args.client_cpus) as wrk, running(service("adaptive", args.server_cpus, args.workers)) as server:
        load = wrk.start(server.url + "/payload", body=body, connections=8, seconds=args.target_seconds)
        time.sleep(1)  # every client has a job in flight before probing starts
        health = wrk.run(server.url + "/health", body=None, connections=1, seconds=args.target_seconds - 2)
        posted = wrk.result(load)
    data = {"health": health.as_dict(), "load": posted.as_dict()}
    passed = verdict(
        "P3",
        health.p99_ms <= P3_HEALTH_P99_MS and posted.requests > 0,
        f"/health p99 {health.p99_ms:.2f} ms (p50 {health.p50_ms:.2f}, max {health.max_ms:.1f}) over "
        f"{health.requests} probes while 8 clients posted {size_label(*HEAVY)} "
        f"({posted.requests - posted.non_2xx} analysed, {posted.non_2xx} refused); target <= {P3_HEALTH_P99_MS} ms",
    )
    return data, passed


def target_p4(args: argparse.Namespace) -> tuple[dict, bool]:
    body = make_body(*HEAVY)
    with Wrk(args.client_cpus) as wrk, running(service("adaptive", args.server_cpus, args.workers)) as server:
        idle = tree_rss_bytes(server.pid)
        with PeakRss(server.pid) as peak:
            posted = wrk.run(server.url + "/payload", body=body, connections=32, seconds=args.target_seconds)
    data = {"idle_rss_bytes": idle, "peak_rss_bytes": peak.peak, "load": posted.as_dict()}
    passed = verdict(
        "P4",
        peak.peak <= P4_RSS_LIMIT and posted.requests > posted.non_2xx,
        f"peak RSS of the process tree {peak.peak / 2**20:.0f} MiB (idle {idle / 2**20:.0f} MiB) with "
        f"32 clients posting {size_label(*HEAVY)} ({len(body) / 2**20:.1f} MiB bodies): "
        f"{posted.requests - posted.non_2xx} analysed, {posted.non_2xx} shed with 503; target <= 1024 MiB",
    )
    return data, passed


def _timed_analysis(body: bytes) -> float:
    from compute.analysis import analyze_body
    from compute.schema import Limits

    started = time.perf_counter()
    analyze_body(body, Limits())
    return time.perf_counter() - started


def _timed_python_loop(iterations: int) -> float:
    started = time.perf_counter()
    total = 0
    for i in range(iterations):
        total += i * i
    return time.perf_counter() - started


def parallel_scaling(body: bytes, repeats: int) -> dict[str, float]:
    """How much longer one task takes when two run at once on the two cores (1.0: no slow-down).

    A pure-Python loop is the control: it shows whether the cores themselves scale. The analysis
    of a large payload also streams megabytes through memory, which two cores share.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    tasks = {"python loop": (_timed_python_loop, 3_000_000), "analysis": (_timed_analysis, body)}
    slowdown = {}
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("forkserver")) as executor:
        for name, (task, argument) in tasks.items():
            list(executor.map(task, [argument] * 2))  # warm-up
            alone = statistics.median(executor.submit(task, argument).result() for _ in range(repeats * 2))
            together = statistics.median(
                [seconds for _ in range(repeats) for seconds in executor.map(task, [argument] * 2)]
            )
            slowdown[name] = together / alone
    return slowdown


class _CpuSplit:
    """Where this process and its pool spend CPU over chosen runs: the pool's processes, the
    event loop's thread, and the executor's own threads (its manager and queue feeder)."""

    PARTS = ("pool processes", "event loop", "executor threads")

    def __init__(self) -> None:
        self.seconds = dict.fromkeys(self.PARTS, 0.0)
        self.jobs = 0

    def add(self, before: dict[str, float], after: dict[str, float], jobs: int) -> None:
        """Count a run: ``reading()`` before and after it, and the jobs it did."""
        for part in self.PARTS:
            self.seconds[part] += after[part] - before[part]
        self.jobs += jobs

    def per_job_ms(self) -> dict[str, float]:
        return {part: 1000 * seconds / max(self.jobs, 1) for part, seconds in self.seconds.items()}

    @staticmethod
    def reading() -> dict[str, float]:
        me = os.getpid()
        threads = thread_cpu_seconds(me)
        loop = threads.pop(me, 0.0)
        return {
            "pool processes": sum(cpu_seconds(child) for child in descendants(me)),
            "event loop": loop,
            # Every other thread here: the thread pool's threads idle while the process pool runs.
            "executor threads": sum(threads.values()),
        }


def target_p5(args: argparse.Namespace) -> tuple[dict, bool]:
    """Process pool vs thread pool; inline (one core) alongside, so each pool's speed-up shows."""
    body = make_body(*P5_PAYLOAD)
    concurrency = 2 * args.workers
    modes = ("inline", "thread", "process")

    process_cpu = _CpuSplit()

    async def measure() -> dict[str, list[float]]:
        runs: dict[str, list[float]] = {mode: [] for mode in modes}
        async with _started_dispatchers(modes, threshold=0, alone_threshold=0, workers=args.workers) as dispatchers:
            for dispatcher in dispatchers.values():
                await _drive(dispatcher, body, concurrency, 0)
            for repeat in range(args.repeats):
                for mode in modes if repeat % 2 == 0 else reversed(modes):
                    before = process_cpu.reading()
                    result = await _drive(dispatchers[mode], body, concurrency, args.target_seconds)
                    if mode == "process":
                        process_cpu.add(before, process_cpu.reading(), result["jobs"])
                    runs[mode].append(result["rps"])
        return runs

    runs = asyncio.run(measure())
    cpu_per_job = process_cpu.per_job_ms()
    cores = len(os.sched_getaffinity(0))
    total_ms = sum(cpu_per_job.values())
    # /proc counts in clock ticks: a tiny run may have used none.
    bound = cores * 1000 / total_ms if total_ms else None
    inline, thread, process = (statistics.median(runs[mode]) for mode in modes)
    ratio = process / thread
    slowdown = parallel_scaling(body, args.repeats)
    print(
        f"P5 detail: inline {inline:.2f} jobs/s; thread pool {thread / inline:.2f} x inline, "
        f"process pool {process / inline:.2f} x inline. Two at once on two cores: a Python loop takes "
        f"{slowdown['python loop']:.2f} x as long as alone, this analysis {slowdown['analysis']:.2f} x"
    )
    print(
        "P5 detail: the process pool's CPU per job: "
        + ", ".join(f"{part} {ms:.2f} ms" for part, ms in cpu_per_job.items())
        + (f"; on {cores} cores that bounds it at {bound:.0f} jobs/s" if bound else "")
    )
    passed = verdict(
        "P5",
        ratio >= P5_SPEEDUP,
        f"{size_label(*P5_PAYLOAD)} ({len(body) / 1e6:.1f} MB), {args.workers} workers, {concurrency} callers: "
        f"process pool {process:.2f} jobs/s vs thread pool {thread:.2f} jobs/s = {ratio:.2f} x "
        f"(target >= {P5_SPEEDUP}); inline {inline:.2f} jobs/s",
    )
    return {
        "inline_rps": runs["inline"],
        "thread_rps": runs["thread"],
        "process_rps": runs["process"],
        "ratio": ratio,
        "thread_speedup": thread / inline,
        "process_speedup": process / inline,
        "slowdown_two_at_once": slowdown,
        "process_cpu_per_job_ms": cpu_per_job,
        "process_bound_rps": bound,
    }, passed


TARGETS = {"p3": target_p3, "p4": target_p4, "p5": target_p5}


def _parse_sizes(text: str) -> tuple[tuple[int, int], ...]:
    return tuple((int(numbers), int(chars)) for numbers, chars in (item.split(":") for item in text.split(",")))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pools", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--target",
        choices=["matrix", "p3", "p4", "p5", "all"],
        default="matrix",
        help="matrix: the mode comparison (default); p3/p4/p5: that target; all: everything",
    )
    parser.add_argument("--view", choices=["both", "in-process", "http"], default="both")
    parser.add_argument(
        "--sizes",
        type=_parse_sizes,
        default=POOL_SIZES,
        help="numbers:text_chars,... (default: 5:100 up to 1000000:5000000)",
    )
    parser.add_argument(
        "--concurrency",
        type=lambda text: tuple(int(c) for c in text.split(",")),
        default=(1, 4),
        help="comma-separated client counts (default 1,4)",
    )
    parser.add_argument("--seconds", type=float, default=3.0, help="duration of each run")
    parser.add_argument("--repeats", type=int, default=3, help="alternated runs per mode (median quoted)")
    parser.add_argument("--target-seconds", type=float, default=10.0, help="duration of the P3/P4/P5 runs")
    parser.add_argument(
        "--threshold",
        type=int,
        default=Settings().inline_threshold_bytes,
        help="INLINE_THRESHOLD_BYTES for adaptive (default: the service's)",
    )
    parser.add_argument(
        "--alone-threshold",
        type=int,
        default=Settings().inline_alone_threshold_bytes,
        help="INLINE_ALONE_THRESHOLD_BYTES for adaptive (default: the service's)",
    )
    parser.add_argument(
        "--server-cpus",
        default="0,1",
        help="taskset cpus for the service: a 2-worker pool needs both cores (default 0,1)",
    )
    parser.add_argument("--client-cpus", default="1", help="taskset cpus for wrk (default 1)")
    parser.add_argument(
        "--workers",
        type=int,
        default=WORKERS,
        help=f"POOL_WORKERS of the thread and process pools (default {WORKERS}); the in-process view "
        "runs in this process, so give it as many cores with taskset",
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes, 1 s runs, 1 repeat: checks the bench works")
    parser.add_argument("--out", type=Path, default=Path("bench-results/pools"))
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.concurrency, args.seconds, args.repeats = ((5, 100), (1_000, 10_000)), (2,), 0.3, 1
        args.target_seconds = 3.0
    settings = {
        key: getattr(args, key)
        for key in (
            "target",
            "view",
            "sizes",
            "concurrency",
            "seconds",
            "repeats",
            "target_seconds",
            "threshold",
            "alone_threshold",
            "server_cpus",
            "client_cpus",
            "workers",
        )
    }
    machine = print_header("bench.pools: inline vs thread vs process vs adaptive", settings)
    data: dict[str, object] = {"machine": machine, "settings": settings}
    sections: list[str] = []
    passed = True
    args.out.mkdir(parents=True, exist_ok=True)
    pngs = []
    if args.target in ("matrix", "all"):
        cut = max(args.concurrency)
        for view in ("in-process", "http"):
            if args.view not in ("both", view):
                continue
            if view == "in-process":
                rows = asyncio.run(_in_process(args.sizes, args.concurrency, args.seconds, args.repeats, args))
            else:
                rows = _http(args.sizes, args.concurrency, args.seconds, args.repeats, args)
            # The suggestion is taken where both workers can be busy; the other concurrencies show
            # what a lone request would lose by it.
            found_at = {concurrency: crossover(rows, concurrency) for concurrency in sorted(args.concurrency)}
            found = found_at[cut]
            data[view] = {"rows": rows, "crossover": found, "crossover_by_clients": list(found_at.values())}
            cut_overs = "\n".join(
                f"- at {clients} clients: inline wins up to {at['inline_wins_up_to']} B, the process pool "
                f"from {at['process_wins_from']} B; suggested INLINE_THRESHOLD_BYTES = "
                f"{at['suggested_threshold_bytes']}"
                for clients, at in found_at.items()
            )
            if view == "in-process" and 1 in args.concurrency:
                lone = data[view]["lone_inline"] = lone_inline_limit(rows)
                cut_overs += (
                    f"\n- alone, inline analysis takes {LONE_HOLD_BUDGET_MS:g} ms at {lone['budget_reached_at']} B; "
                    f"suggested INLINE_ALONE_THRESHOLD_BYTES = {lone['suggested_bytes']}"
                    if lone["suggested_bytes"] is not None
                    else f"\n- no two sizes measured straddle {LONE_HOLD_BUDGET_MS:g} ms of inline analysis alone"
                )
            sections.append(
                f"### {view}\n\n{_table(rows)}\n\nCut-over (the suggestion is the {cut}-client one):\n\n{cut_overs}"
            )
            for clients, at in found_at.items():
                print(f"{view}: cut-over at {clients} clients: {at}")
            png = args.out / f"pools-{view}.png"
            _plot(rows, view, png)
            pngs.append(png)
    for name, measure in TARGETS.items():
        if args.target in (name, "all"):
            result, ok = measure(args)
            data[name] = result
            passed &= ok
            sections.append(f"### {name.upper()}\n\n```\n{result}\n```")
    for path in [*write_outputs(args.out, "pools", "\n\n".join(sections), data), *pngs]:
        print(f"wrote {path}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
