"""Settings: every option is a command-line flag and an environment variable, validated once."""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from compute.dispatch import Dispatch
from compute.schema import Limits

KIB = 1024
MIB = 1024 * KIB


class ConfigError(ValueError):
    """A setting is invalid; start-up stops with exit code 2."""


def available_cpus() -> int:
    """CPUs this process may really use: its affinity mask, capped by a cgroup v2 cpu.max quota."""
    cpus = len(os.sched_getaffinity(0))
    quota = _cgroup_cpu_quota()
    if quota is not None:
        cpus = min(cpus, max(1, math.ceil(quota)))
    return cpus


def _cgroup_cpu_quota(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    try:
        membership = Path("/proc/self/cgroup").read_text()
    except OSError:
        return None
    # cgroup v2 has a single "0::<path>" line; every ancestor's cpu.max also limits us.
    paths = [line[3:] for line in membership.splitlines() if line.startswith("0::")]
    if not paths:
        return None
    quotas = []
    directory = root / paths[0].lstrip("/")
    while True:
        try:
            limit, period = (directory / "cpu.max").read_text().split()
            if limit != "max":
                quotas.append(int(limit) / int(period))
        except (OSError, ValueError):
            pass
        if directory == root or root not in directory.parents:
            break
        directory = directory.parent
    return min(quotas) if quotas else None


@dataclass(frozen=True)
class Settings:
    host: str = "0.0.0.0"  # nosec B104 - a service in a container listens on all interfaces
    port: int = 8000
    pool_workers: int = 0  # 0: available_cpus()
    dispatch: Dispatch = Dispatch.ADAPTIVE
    # Where bench.pools puts the cut-over, with one worker and with two (docs/performance.md).
    inline_threshold_bytes: int = 512 * KIB
    # How long a lone request may hold the event loop: under 10 ms (P3's bound), about 5.5 ms here.
    inline_alone_threshold_bytes: int = 2 * MIB
    max_numbers: int = 1_000_000
    max_text_chars: int = 5_000_000
    max_body_bytes: int = 32 * MIB
    max_pending: int = 0  # 0: 4 x pool_workers
    compute_timeout_s: float = 20.0
    body_timeout_s: float = 30.0
    graceful_timeout_s: float = 30.0
    shutdown_delay_s: float = 0.0
    log_level: str = "info"
    access_log: bool = False
    web_concurrency: int = 1
    metrics_port: int = 0  # 0: /metrics is served on the main port

    @property
    def limits(self) -> Limits:
        return Limits(max_numbers=self.max_numbers, max_text_chars=self.max_text_chars)

    def resolved(self) -> Settings:
        """Fill the defaults that depend on the machine or on other settings."""
        workers = self.pool_workers or available_cpus()
        pending = self.max_pending or 4 * workers
        return dataclasses.replace(self, pool_workers=workers, max_pending=pending)


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise ValueError("must be a positive integer")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError("must be 0 or more")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value < 0:
        raise ValueError("must be a finite number >= 0")
    return value


def _positive_float(text: str) -> float:
    value = _non_negative_float(text)
    if value == 0:
        raise ValueError("must be > 0")
    return value


# A timeout recycles the whole pool; the other jobs it breaks wait at most COMPUTE_TIMEOUT_S for the
# rebuild, then get a 503. The rebuild takes about 0.1 s here (the warm-up probe alone holds each
# new worker 50 ms), several times that on a busy node: a second keeps it well inside.
_MIN_COMPUTE_TIMEOUT_S = 1.0


def _compute_timeout(text: str) -> float:
    value = _non_negative_float(text)
    if value < _MIN_COMPUTE_TIMEOUT_S:
        raise ValueError(
            f"must be at least {_MIN_COMPUTE_TIMEOUT_S:g} (seconds): a timeout recycles the process pool,"
            " and its rebuild must fit well within the timeout"
        )
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise ValueError("must be a TCP port (0-65535)")
    return value


def _log_level(text: str) -> str:
    level = text.lower()
    if level not in {"critical", "error", "warning", "info", "debug"}:
        raise ValueError("must be one of critical, error, warning, info, debug")
    return level


def _boolean(text: str) -> bool:
    lowered = text.lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ValueError("must be true or false")


def _dispatch(text: str) -> Dispatch:
    try:
        return Dispatch(text.lower())
    except ValueError:
        raise ValueError(f"must be one of {', '.join(d.value for d in Dispatch)}") from None


@dataclass(frozen=True)
class _Option:
    name: str  # the Settings field; the env var is its upper-case form
    parse: Callable[[str], object]
    help: str


_OPTIONS = (
    _Option("host", str, "interface to listen on"),
    _Option("port", _port, "TCP port to listen on"),
    _Option("pool_workers", _non_negative_int, "process pool size; 0 = CPUs available (affinity and cgroup quota)"),
    _Option("dispatch", _dispatch, "where analyses run: adaptive, inline, thread or process"),
    _Option(
        "inline_threshold_bytes",
        _non_negative_int,
        "adaptive: bodies up to this size are analysed inline",
    ),
    _Option(
        "inline_alone_threshold_bytes",
        _non_negative_int,
        "adaptive: a body up to this size is analysed inline when no other request is in progress",
    ),
    _Option("max_numbers", _positive_int, "most numbers accepted in one payload"),
    _Option("max_text_chars", _positive_int, "most text characters accepted in one payload"),
    _Option("max_body_bytes", _positive_int, "largest request body accepted, in bytes"),
    _Option("max_pending", _non_negative_int, "most analyses queued or running off the event loop; 0 = 4 x workers"),
    _Option(
        "compute_timeout_s",
        _compute_timeout,
        "a pool job not done this long after its hand-off is abandoned (504) and the pool recycled;"
        f" inline and thread analyses are not timed; at least {_MIN_COMPUTE_TIMEOUT_S:g} s",
    ),
    _Option("body_timeout_s", _positive_float, "a request body not fully received within this is refused (408)"),
    _Option("graceful_timeout_s", _non_negative_float, "on shutdown, longest wait for in-flight requests"),
    _Option(
        "shutdown_delay_s", _non_negative_float, "on shutdown, time between turning unready and closing the listener"
    ),
    _Option("log_level", _log_level, "critical, error, warning, info or debug"),
    _Option("access_log", _boolean, "log one line per request"),
    _Option("web_concurrency", _positive_int, "uvicorn worker processes; more than 1 runs a supervisor"),
    _Option("metrics_port", _port, "serve /metrics on this port only (404 on the main port); 0 = off"),
)


def load_settings(argv: Sequence[str], environ: Mapping[str, str]) -> Settings:
    """Settings from flags, then environment variables, then defaults. Raises ConfigError."""
    defaults = Settings()
    parser = argparse.ArgumentParser(
        prog="sre-microservice",
        description="Analyse JSON payloads over HTTP. Every option is also an environment variable.",
    )
    for option in _OPTIONS:
        default = getattr(defaults, option.name)
        parser.add_argument(
            "--" + option.name.replace("_", "-"),
            dest=option.name,
            metavar=option.name.upper(),
            help=f"{option.help} (env {option.name.upper()}"
            + (f", default {default})" if default is not None else ")"),
        )
    namespace = parser.parse_args(list(argv))
    values: dict[str, object] = {}
    for option in _OPTIONS:
        flag, env = getattr(namespace, option.name), environ.get(option.name.upper())
        if flag is not None:
            raw, source = flag, "--" + option.name.replace("_", "-")
        elif env is not None:
            raw, source = env, option.name.upper()
        else:
            continue
        try:
            values[option.name] = option.parse(raw)
        except ValueError as error:
            raise ConfigError(f"{source}={raw!r}: {error}") from None
    settings = Settings(**values).resolved()  # type: ignore[arg-type]
    if settings.metrics_port and settings.metrics_port == settings.port:
        raise ConfigError(f"METRICS_PORT={settings.metrics_port} must differ from PORT")
    return settings
