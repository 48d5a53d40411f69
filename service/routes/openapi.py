"""GET /openapi.json."""

from __future__ import annotations

import functools

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from compute.schema import Limits
from service.openapi import openapi_document
from service.services import services_of


async def openapi(request: Request) -> Response:
    return Response(_document_json(services_of(request).settings.limits), media_type="application/json")


@functools.lru_cache(maxsize=1)
def _document_json(limits: Limits) -> bytes:
    # The document depends only on the limits, which are fixed at start-up: build it once.
    return msgspec.json.encode(openapi_document(limits))
