"""GET /metrics in the Prometheus text format."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from service.services import services_of


async def metrics(request: Request) -> Response:
    registry = services_of(request).metrics
    return Response(registry.render(), media_type=registry.content_type)
