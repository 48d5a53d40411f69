"""The application factory: routes, middleware, error handlers and shared services."""

from __future__ import annotations

import os

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.routing import Route

from compute.dispatch import Dispatcher
from service.config import Settings
from service.errors import Problem, handle_http_exception, handle_problem, handle_unexpected
from service.lifecycle import Lifecycle, lifespan
from service.metrics import Metrics
from service.middleware import TelemetryMiddleware
from service.routes.health import health, ready
from service.routes.metrics import metrics
from service.routes.openapi import openapi
from service.routes.payload import PayloadRoute
from service.services import Services


def create_app(settings: Settings, lifecycle: Lifecycle | None = None) -> Starlette:
    metrics_registry = Metrics(revision=os.environ.get("REVISION", "unknown"))
    dispatcher = Dispatcher(
        settings.dispatch,
        settings.limits,
        workers=settings.pool_workers,
        max_pending=settings.max_pending,
        inline_threshold_bytes=settings.inline_threshold_bytes,
        inline_alone_threshold_bytes=settings.inline_alone_threshold_bytes,
        compute_timeout_s=settings.compute_timeout_s,
        observer=metrics_registry,
    )
    services = Services(
        settings=settings,
        dispatcher=dispatcher,
        metrics=metrics_registry,
        lifecycle=lifecycle or Lifecycle(),
    )
    app = Starlette(
        routes=[
            Route("/payload", PayloadRoute(services), methods=["POST"]),
            Route("/health", health, methods=["GET"]),
            Route("/ready", ready, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
            Route("/openapi.json", openapi, methods=["GET"]),
        ],
        middleware=[
            Middleware(TelemetryMiddleware, metrics=metrics_registry),
        ],
        exception_handlers={
            Problem: handle_problem,
            HTTPException: handle_http_exception,
            Exception: handle_unexpected,
        },
        lifespan=lifespan,
    )
    # Paths are exact: /payload/ is a 404 problem, not a redirect built from the client's Host.
    app.router.redirect_slashes = False
    app.state.services = services
    return app
