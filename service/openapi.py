"""The OpenAPI 3.1 document, generated from the msgspec types so it cannot drift from the code."""

from __future__ import annotations

from typing import Any

import msgspec

from compute.schema import Analysis, Limits, payload_type
from service import __version__
from service.errors import PROBLEM_MEDIA_TYPE, ProblemDetails

_PROBLEMS = {
    "400": "Malformed JSON (including NaN or Infinity literals, invalid UTF-8), or a request that is not valid HTTP.",
    "408": "The body was not received within BODY_TIMEOUT_S, or the headers within 10 s.",
    "431": "The request headers exceed 64 KiB.",
    "413": "The body exceeds MAX_BODY_BYTES.",
    "415": "Content-Type is not application/json (or sent twice), or the body is compressed.",
    "422": "The JSON does not match the payload schema; `errors` lists the JSON paths.",
    "503": "Too many analyses pending (see Retry-After), or the compute pool is unavailable.",
    "501": "A Transfer-Encoding other than chunked alone.",
    "504": "The analysis exceeded COMPUTE_TIMEOUT_S.",
}


def openapi_document(limits: Limits) -> dict[str, Any]:
    (payload_schema, analysis_schema, problem_schema), components = msgspec.json.schema_components(
        [payload_type(limits), Analysis, ProblemDetails], ref_template="#/components/schemas/{name}"
    )

    def problem(description: str) -> dict[str, Any]:
        return {"description": description, "content": {PROBLEM_MEDIA_TYPE: {"schema": problem_schema}}}

    status_schema = {"type": "object", "properties": {"status": {"type": "string"}}, "required": ["status"]}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "sre-microservice",
            "version": __version__,
            "description": "Numeric statistics and text counts of a JSON payload. Text rules: docs/api.md.",
            "license": {"name": "MIT", "identifier": "MIT"},
        },
        "paths": {
            "/payload": {
                "post": {
                    "operationId": "analyzePayload",
                    "summary": "Analyse numbers and text",
                    "requestBody": {"required": True, "content": {"application/json": {"schema": payload_schema}}},
                    "responses": {
                        "200": {
                            "description": "The analysis.",
                            "content": {"application/json": {"schema": analysis_schema}},
                        },
                        **{status: problem(text) for status, text in _PROBLEMS.items()},
                    },
                }
            },
            "/health": {
                "get": {
                    "operationId": "health",
                    "summary": "Liveness: 200 whenever the event loop answers",
                    "responses": {
                        "200": {"description": "Alive.", "content": {"application/json": {"schema": status_schema}}}
                    },
                }
            },
            "/ready": {
                "get": {
                    "operationId": "ready",
                    "summary": "Readiness: 200 when the pool is warm and the service is not draining",
                    "responses": {
                        "200": {"description": "Ready.", "content": {"application/json": {"schema": status_schema}}},
                        "503": problem("Not ready; `reason` says why (draining, compute pool starting)."),
                    },
                }
            },
            "/metrics": {
                "get": {
                    "operationId": "metrics",
                    "summary": "Prometheus metrics",
                    "responses": {
                        "200": {
                            "description": "Prometheus text format.",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        }
                    },
                }
            },
        },
        "components": {"schemas": components},
    }
