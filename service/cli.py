"""``python -m service`` / ``sre-microservice``: parse settings, then run uvicorn programmatically."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

import uvicorn

from service.app import create_app
from service.config import ConfigError, Settings, load_settings
from service.lifecycle import GracefulServer, Lifecycle
from service.logs import logging_config

EXIT_BAD_CONFIG = 2


def main(argv: Sequence[str] | None = None) -> None:
    try:
        settings = load_settings(sys.argv[1:] if argv is None else argv, os.environ)
    except ConfigError as error:
        print(f"sre-microservice: invalid setting: {error}", file=sys.stderr)
        sys.exit(EXIT_BAD_CONFIG)
    server = build_server(settings)
    server.run()
    # A failed start-up already exited non-zero inside uvicorn.
    sys.exit(0)


def build_server(settings: Settings) -> GracefulServer:
    def build_app(lifecycle: Lifecycle) -> object:
        return create_app(settings, lifecycle)

    config = uvicorn.Config(
        app=build_app,  # replaced by GracefulServer.serve with the built app
        host=settings.host,
        port=settings.port,
        log_config=logging_config(settings.log_level, settings.access_log),
        access_log=settings.access_log,
        timeout_graceful_shutdown=settings.graceful_timeout_s,
        server_header=False,
        # Large bodies are read while the pool computes; keep idle connections cheap to hold.
        timeout_keep_alive=5,
    )
    return GracefulServer(config, build_app=build_app, shutdown_delay_s=settings.shutdown_delay_s)
