"""``python -m service`` / ``sre-microservice``: parse settings, then run uvicorn programmatically.

Nothing that imports prometheus_client is imported at module level: prometheus_client chooses
in-memory or file-backed (multiprocess) values when it is first imported, so the metrics mode
must be in the environment before that (see ``_choose_metrics_storage``).
"""

from __future__ import annotations

import functools
import glob
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from service.config import ConfigError, Settings, load_settings

if TYPE_CHECKING:
    import uvicorn

    from service.lifecycle import GracefulServer, Lifecycle
    from service.metrics import MetricsListener

EXIT_BAD_CONFIG = 2
EXIT_LISTEN_FAILED = 1
MULTIPROC_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"


def main(argv: Sequence[str] | None = None) -> None:
    try:
        settings = load_settings(sys.argv[1:] if argv is None else argv, os.environ)
    except ConfigError as error:
        print(f"sre-microservice: invalid setting: {error}", file=sys.stderr)
        sys.exit(EXIT_BAD_CONFIG)
    created_dir = _choose_metrics_storage(settings)
    try:
        sys.exit(_run(settings))
    finally:
        if created_dir is not None:
            shutil.rmtree(created_dir, ignore_errors=True)


def _choose_metrics_storage(settings: Settings) -> str | None:
    """Several workers share metrics through files in PROMETHEUS_MULTIPROC_DIR; one keeps them in memory.

    Returns the directory when this process created it (and should remove it at exit).
    """
    if settings.web_concurrency == 1:
        os.environ.pop(MULTIPROC_DIR_ENV, None)
        return None
    directory = os.environ.get(MULTIPROC_DIR_ENV)
    if directory:
        # Files of an earlier run would be merged into this run's counters.
        for stale in glob.glob(os.path.join(directory, "*.db")):
            os.remove(stale)
        return None
    directory = tempfile.mkdtemp(prefix="prometheus-multiproc-", dir="/tmp")  # nosec B108 - /tmp is the only writable path
    os.environ[MULTIPROC_DIR_ENV] = directory
    return directory


def _run(settings: Settings) -> int:
    from service.metrics import MetricsListener

    listener = None
    if settings.metrics_port:
        try:
            listener = MetricsListener(settings.host, settings.metrics_port)
        except OSError as error:
            print(f"sre-microservice: cannot listen on METRICS_PORT {settings.metrics_port}: {error}", file=sys.stderr)
            return EXIT_LISTEN_FAILED
    try:
        if settings.web_concurrency > 1:
            from service.supervisor import run_workers

            return run_workers(
                uvicorn_config(settings, functools.partial(_create_app, settings)),
                server_factory=functools.partial(build_server, settings),
                metrics_listener=listener,
            )
        build_app: Callable[[Lifecycle], object] = functools.partial(_create_app, settings)
        if listener is not None:
            build_app = functools.partial(_create_app_serving_metrics, settings, listener)
        from service.lifecycle import EXIT_FORCED

        server = build_server(settings, build_app)
        server.run()
        # A failed start-up already exited non-zero inside uvicorn.
        return EXIT_FORCED if server.forced else 0
    finally:
        if listener is not None:
            listener.close()


def _create_app(settings: Settings, lifecycle: Lifecycle) -> object:
    from service.app import create_app

    return create_app(settings, lifecycle)


def _create_app_serving_metrics(settings: Settings, listener: MetricsListener, lifecycle: Lifecycle) -> object:
    app = _create_app(settings, lifecycle)
    listener.serve(app.state.services.metrics.render)  # type: ignore[attr-defined]
    return app


def uvicorn_config(settings: Settings, build_app: Callable[[Lifecycle], object]) -> uvicorn.Config:
    import uvicorn

    from service.http_guards import GuardedHttpToolsProtocol
    from service.logs import logging_config

    return uvicorn.Config(
        app=build_app,  # replaced by GracefulServer.serve with the built app
        host=settings.host,
        port=settings.port,
        workers=settings.web_concurrency,
        log_config=logging_config(settings.log_level, settings.access_log),
        access_log=settings.access_log,
        timeout_graceful_shutdown=settings.graceful_timeout_s,
        server_header=False,
        # Large bodies are read while the pool computes; keep idle connections cheap to hold.
        timeout_keep_alive=5,
        http=GuardedHttpToolsProtocol,  # header deadline and size cap (service/http_guards.py)
        ws="none",  # no websocket routes: an Upgrade offer is ignored (service/http_guards.py)
    )


def build_server(settings: Settings, build_app: Callable[[Lifecycle], object] | None = None) -> GracefulServer:
    from service.lifecycle import GracefulServer

    build_app = build_app or functools.partial(_create_app, settings)
    return GracefulServer(
        uvicorn_config(settings, build_app),
        build_app=build_app,  # type: ignore[arg-type]
        shutdown_delay_s=settings.shutdown_delay_s,
    )
