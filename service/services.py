"""What the routes share, built once per app and kept on ``app.state.services``."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request

from compute.dispatch import Dispatcher
from service.config import Settings
from service.lifecycle import Lifecycle
from service.metrics import Metrics


@dataclass(frozen=True)
class Services:
    settings: Settings
    dispatcher: Dispatcher
    metrics: Metrics
    lifecycle: Lifecycle


def services_of(request: Request) -> Services:
    services: Services = request.app.state.services
    return services
