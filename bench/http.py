"""The service over HTTP against the ceiling of its stack, and the latency targets P1 and P2.

The ceiling is a bare Starlette route that reads the body and returns a constant, served by
uvicorn with the service's settings, on the same core, with the same payloads; the two are
alternated run by run (A/B) and the ratio of medians is quoted.

    python -m bench.http                      # service / ceiling across payload sizes
    python -m bench.http --target p1          # P1: small payloads, 32 connections, >= 0.8 x ceiling;
                                              #     also the service with its analysis replaced by a
                                              #     constant, to show what the analysis costs
    python -m bench.http --target p2          # P2: 100k numbers latency vs the in-process floor,
                                              #     and 10k numbers vs the seed's design (>= 6 x)
    python -m bench.http --target asgi        # CPU per request of the ASGI apps alone, in-process

The ``asgi`` view calls both apps directly with a small request (no sockets, no uvicorn) and
measures CPU time: on a shared machine it is the steadiest view of what the service adds.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from bench._common import (
    Server,
    Wrk,
    all_running,
    alternate,
    make_body,
    markdown_table,
    print_header,
    pyplot,
    service_command,
    size_label,
    verdict,
    write_outputs,
)

# (numbers, text characters) of the ceiling comparison; the first is P1's payload.
PAYLOADS = ((10, 160), (1_000, 10_000), (10_000, 100_000))
P1_RATIO = 0.8
P2_FLOOR_RATIO = 1.5
P2_SEED_SPEEDUP = 6.0
P2_LARGE = (100_000, 100_000)
P2_SEED_SIZE = (10_000, 10_000)


# ------------------------------------------------------------------------------------ the ceiling


def bare_app():  # type: ignore[no-untyped-def]
    """A Starlette app whose POST /payload only reads the body: the stack's ceiling."""
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    async def ready(request):  # type: ignore[no-untyped-def]
        return PlainTextResponse("ready")

    async def payload(request):  # type: ignore[no-untyped-def]
        from starlette.responses import Response

        await request.body()
        return Response(b'{"status":"ok"}', media_type="application/json")

    return Starlette(routes=[Route("/payload", payload, methods=["POST"]), Route("/ready", ready)])


def serve_bare(port: int) -> None:
    import uvicorn

    # The service's uvicorn settings (service/cli.py), without its logging.
    uvicorn.run(
        bare_app(),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
        server_header=False,
        timeout_keep_alive=5,
    )


def serve_without_analysis(port: int) -> None:
    """The service with every analysis answered by a constant: what all its other layers cost.

    Only the inline path is replaced, so this is meant for small payloads (P1).
    """
    import compute.dispatch
    from compute.analysis import analyze_body
    from compute.schema import Limits
    from service.cli import main as service_main

    constant = analyze_body(make_body(*PAYLOADS[0]), Limits())
    compute.dispatch.analyze_body = lambda body, limits: constant  # type: ignore[assignment]
    service_main(["--port", str(port)])


def bare_server(cpus: str | None) -> Server:
    return Server([sys.executable, "-m", "bench.http", "--serve-bare", "{port}"], cpus=cpus)


def without_analysis_server(cpus: str | None) -> Server:
    return Server([sys.executable, "-m", "bench.http", "--serve-without-analysis", "{port}"], cpus=cpus)


def service_server(args: argparse.Namespace) -> Server:
    env = {"INLINE_THRESHOLD_BYTES": str(args.threshold)} if args.threshold is not None else {}
    return Server(service_command(), env=env, cpus=args.server_cpus)


# ---------------------------------------------------------------------------------- measurements


def ceiling(args: argparse.Namespace) -> tuple[list[dict[str, object]], bool]:
    rows: list[dict[str, object]] = []
    payloads = PAYLOADS[:1] if args.target == "p1" else PAYLOADS
    bare, service = bare_server(args.server_cpus), service_server(args)
    stub = without_analysis_server(args.server_cpus)
    with Wrk(args.client_cpus) as wrk, all_running([bare, service, stub]):
        for numbers, text in payloads:
            body = make_body(numbers, text)
            servers = {"ceiling": bare, "service": service}
            if (numbers, text) == PAYLOADS[0]:
                servers["without_analysis"] = stub  # its constant answer stands in for inline analyses only
            result = alternate(
                wrk,
                servers,
                body,
                connections=args.connections,
                seconds=args.seconds,
                repeats=args.repeats,
            )
            row = {
                "payload": size_label(numbers, text),
                "body_bytes": len(body),
                "ceiling": result["ceiling"].as_dict(),
                "service": result["service"].as_dict(),
                # Refused requests (503 when more analyses are pending than the pool takes) are no throughput.
                "ratio": result["service"].ok_rps / result["ceiling"].ok_rps,
                "cpu_ratio": result["ceiling"].cpu_ms_per_request / result["service"].cpu_ms_per_request,
            }
            if "without_analysis" in result:
                row["without_analysis"] = result["without_analysis"].as_dict()
                row["without_analysis_ratio"] = result["without_analysis"].ok_rps / result["ceiling"].ok_rps
            rows.append(row)
            print(
                f"{row['payload']:>12}: ceiling {result['ceiling'].rps:8.0f} req/s, service "
                f"{result['service'].ok_rps:8.0f} req/s ({result['service'].non_2xx} refused), "
                f"ratio {row['ratio']:.3f}, CPU/request ratio "
                f"{row['cpu_ratio']:.3f} "
                f"(p99 {result['ceiling'].p99_ms:.2f} / {result['service'].p99_ms:.2f} ms)"
            )
    first = rows[0]
    print(
        f"{first['payload']:>12}: the service with its analysis replaced by a constant "
        f"{first['without_analysis']['ok_rps']:8.0f} req/s, {first['without_analysis_ratio']:.3f} x the ceiling"
    )
    passed = verdict(
        "P1",
        first["ratio"] >= P1_RATIO,
        f"small payload (10 numbers, 160 chars, {args.connections} connections): "
        f"{first['ratio']:.3f} x the bare Starlette ceiling's throughput (target >= {P1_RATIO}); "
        f"CPU per request {first['cpu_ratio']:.3f} x; without the analysis {first['without_analysis_ratio']:.3f} x",
    )
    return rows, passed


def in_process_floor_ms(body: bytes, repeats: int) -> float:
    """Median time of decode + kernels in this process: what no HTTP service can beat."""
    from compute.analysis import analyze_body
    from compute.schema import Limits

    limits = Limits()
    analyze_body(body, limits)
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        analyze_body(body, limits)
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def p2(args: argparse.Namespace) -> tuple[dict[str, object], bool]:
    large = make_body(*P2_LARGE)
    seed_body = make_body(*P2_SEED_SIZE)
    floor_ms = in_process_floor_ms(large, repeats=max(5, args.repeats * 10))
    seed = Server([sys.executable, "-m", "bench.seed_baseline", "--port", "{port}"], cpus=args.server_cpus)
    service = service_server(args)
    with Wrk(args.client_cpus) as wrk, all_running([service, seed]):
        e2e = alternate(wrk, {"service": service}, large, connections=1, seconds=args.seconds, repeats=args.repeats)[
            "service"
        ]
        versus = alternate(
            wrk,
            {"seed": seed, "service": service},
            seed_body,
            connections=1,
            seconds=args.seconds,
            repeats=args.repeats,
        )
    floor_ratio = e2e.p50_ms / floor_ms
    speedup = versus["seed"].p50_ms / versus["service"].p50_ms
    data = {
        "floor_ms": floor_ms,
        "large_payload": size_label(*P2_LARGE),
        "body_bytes": len(large),
        "service_large": e2e.as_dict(),
        "floor_ratio": floor_ratio,
        "seed_payload": size_label(*P2_SEED_SIZE),
        "seed": versus["seed"].as_dict(),
        "service_seed_payload": versus["service"].as_dict(),
        "seed_speedup": speedup,
    }
    ok_floor = verdict(
        "P2a",
        floor_ratio <= P2_FLOOR_RATIO,
        f"{size_label(*P2_LARGE)}, 1 client: p50 {e2e.p50_ms:.2f} ms end to end vs "
        f"{floor_ms:.2f} ms in-process floor = {floor_ratio:.2f} x (target <= {P2_FLOOR_RATIO})",
    )
    ok_seed = verdict(
        "P2b",
        speedup >= P2_SEED_SPEEDUP,
        f"{size_label(*P2_SEED_SIZE)}, 1 client: p50 seed {versus['seed'].p50_ms:.2f} ms vs "
        f"service {versus['service'].p50_ms:.2f} ms = {speedup:.1f} x faster "
        f"(target >= {P2_SEED_SPEEDUP})",
    )
    return data, ok_floor and ok_seed


def asgi_cost(args: argparse.Namespace) -> dict[str, float]:
    """CPU microseconds per small request of each ASGI app, best of interleaved rounds."""
    import asyncio

    from compute.dispatch import Dispatch
    from service.app import create_app
    from service.config import Settings

    body = make_body(*PAYLOADS[0])
    headers = [
        (b"host", b"127.0.0.1"),
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    statuses: set[int] = set()

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, object]) -> None:
        if message["type"] == "http.response.start":
            statuses.add(message["status"])  # type: ignore[arg-type]

    def scope() -> dict[str, object]:
        return {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/payload",
            "raw_path": b"/payload",
            "query_string": b"",
            "root_path": "",
            "headers": headers,
            "client": ("127.0.0.1", 40000),
            "server": ("127.0.0.1", 8000),
            "state": {},
        }

    async def cpu_us(app, requests: int) -> float:  # type: ignore[no-untyped-def]
        started = time.process_time()
        for _ in range(requests):
            await app(scope(), receive, send)
        return (time.process_time() - started) / requests * 1e6

    async def measure() -> dict[str, list[float]]:
        apps = {"ceiling": bare_app(), "service": create_app(Settings(dispatch=Dispatch.INLINE).resolved())}
        rounds: dict[str, list[float]] = {name: [] for name in apps}
        for app in apps.values():
            await cpu_us(app, 200)  # warm-up
        for _ in range(max(3, args.repeats * 2)):
            for name, app in apps.items():
                rounds[name].append(await cpu_us(app, 300 if args.quick else 3000))
        return rounds

    rounds = asyncio.run(measure())
    if statuses != {200}:
        raise RuntimeError(f"in-process requests answered {statuses}")
    result = {f"{name}_us": min(values) for name, values in rounds.items()}
    print(
        f"ASGI apps in-process, CPU per small request (best of {len(rounds['service'])}): "
        f"ceiling {result['ceiling_us']:.1f} us, service {result['service_us']:.1f} us "
        f"(+{result['service_us'] - result['ceiling_us']:.1f} us)"
    )
    return result


def report(
    out: Path,
    rows: list[dict[str, object]],
    p2_data: dict[str, object] | None,
    asgi: dict[str, float] | None,
    machine: dict[str, object],
    settings: dict[str, object],
) -> list[Path]:
    parts = []
    if asgi:
        parts.append(
            markdown_table(
                ["ASGI app alone (in-process, small payload)", "CPU us per request"],
                [["bare Starlette ceiling", f"{asgi['ceiling_us']:.1f}"], ["service", f"{asgi['service_us']:.1f}"]],
            )
        )
    if rows:
        parts.append(
            markdown_table(
                [
                    "payload",
                    "body",
                    "ceiling req/s",
                    "service req/s",
                    "ratio",
                    "CPU/request ratio",
                    "ceiling p50/p99 ms",
                    "service p50/p99 ms",
                ],
                [
                    [
                        row["payload"],
                        f"{row['body_bytes']:,} B",
                        row["ceiling"]["ok_rps"],
                        row["service"]["ok_rps"],
                        f"{row['ratio']:.3f}",
                        f"{row['cpu_ratio']:.3f}",
                        f"{row['ceiling']['p50_ms']:.2f} / {row['ceiling']['p99_ms']:.2f}",
                        f"{row['service']['p50_ms']:.2f} / {row['service']['p99_ms']:.2f}",
                    ]
                    for row in rows
                ],
            )
        )
    if rows:
        first = rows[0]
        parts.append(
            markdown_table(
                [f"P1 payload ({first['payload']})", "req/s", "x ceiling"],
                [
                    ["bare Starlette ceiling", first["ceiling"]["ok_rps"], "1.000"],
                    [
                        "service, analysis replaced by a constant",
                        first["without_analysis"]["ok_rps"],
                        f"{first['without_analysis_ratio']:.3f}",
                    ],
                    ["service", first["service"]["ok_rps"], f"{first['ratio']:.3f}"],
                ],
            )
        )
    if p2_data:
        parts.append(
            markdown_table(
                ["P2 measurement", "value"],
                [
                    [
                        "in-process floor (decode + kernels), " + str(p2_data["large_payload"]),
                        f"{p2_data['floor_ms']:.2f} ms",
                    ],
                    [
                        "service p50, 1 client, " + str(p2_data["large_payload"]),
                        f"{p2_data['service_large']['p50_ms']:.2f} ms",
                    ],
                    ["service / floor", f"{p2_data['floor_ratio']:.2f} x"],
                    ["seed design p50, " + str(p2_data["seed_payload"]), f"{p2_data['seed']['p50_ms']:.2f} ms"],
                    [
                        "service p50, " + str(p2_data["seed_payload"]),
                        f"{p2_data['service_seed_payload']['p50_ms']:.2f} ms",
                    ],
                    ["seed / service", f"{p2_data['seed_speedup']:.1f} x"],
                ],
            )
        )
    markdown = "\n\n".join(parts)
    paths = write_outputs(
        out, "http", markdown, {"machine": machine, "settings": settings, "ceiling": rows, "p2": p2_data, "asgi": asgi}
    )
    if rows:
        plt = pyplot()
        figure, axis = plt.subplots(figsize=(7, 4))
        labels = [row["payload"] for row in rows]
        positions = range(len(rows))
        axis.bar(
            [p - 0.2 for p in positions],
            [row["ceiling"]["ok_rps"] for row in rows],
            0.4,
            label="bare Starlette ceiling",
        )
        axis.bar([p + 0.2 for p in positions], [row["service"]["ok_rps"] for row in rows], 0.4, label="service")
        for position, row in zip(positions, rows, strict=False):
            axis.annotate(f"{row['ratio']:.2f}x", (position + 0.2, row["service"]["ok_rps"]), ha="center", va="bottom")
        axis.set_xticks(list(positions), labels)
        axis.set_yscale("log")
        axis.set_ylabel("requests/s (log)")
        axis.set_title(
            f"service vs ceiling, {settings['connections']} connections, server on cpu {settings['server_cpus']}"
        )
        axis.legend()
        figure.tight_layout()
        png = out / "http.png"
        figure.savefig(png, dpi=100)
        plt.close(figure)
        paths.append(png)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.http", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--target",
        choices=["all", "p1", "p2", "asgi"],
        default="all",
        help="all: ceiling table, P2 and the in-process ASGI view; p1 / p2 / asgi: just that",
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="duration of each wrk run")
    parser.add_argument("--repeats", type=int, default=3, help="alternated runs per variant (median quoted)")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--server-cpus", default="0", help="taskset cpu list for servers")
    parser.add_argument("--client-cpus", default="1", help="taskset cpu list for wrk")
    parser.add_argument("--threshold", type=int, help="INLINE_THRESHOLD_BYTES for the service (default: its own)")
    parser.add_argument("--quick", action="store_true", help="1 s runs, 1 repeat: checks the bench works")
    parser.add_argument("--out", type=Path, default=Path("bench-results/http"))
    parser.add_argument("--serve-bare", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--serve-without-analysis", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_bare is not None:
        serve_bare(args.serve_bare)
        return 0
    if args.serve_without_analysis is not None:
        serve_without_analysis(args.serve_without_analysis)
        return 0
    if args.quick:
        args.seconds, args.repeats = 1.0, 1
    settings = {
        key: getattr(args, key)
        for key in ("target", "seconds", "repeats", "connections", "threshold", "server_cpus", "client_cpus")
    }
    machine = print_header("bench.http: service vs bare Starlette", settings)
    passed = True
    rows: list[dict[str, object]] = []
    p2_data = asgi = None
    if args.target in ("all", "asgi"):
        asgi = asgi_cost(args)
    if args.target in ("all", "p1"):
        rows, ok = ceiling(args)
        passed &= ok
    if args.target in ("all", "p2"):
        p2_data, ok = p2(args)
        passed &= ok
    for path in report(args.out, rows, p2_data, asgi, machine, settings):
        print(f"wrote {path}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
