"""GET /openapi.json."""

from __future__ import annotations

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from service.openapi import openapi_document
from service.services import services_of


async def openapi(request: Request) -> Response:
    document = openapi_document(services_of(request).settings.limits)
    return Response(msgspec.json.encode(document), media_type="application/json")
