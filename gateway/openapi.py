"""The gateway's OpenAPI 3.1 document, built from the same msgspec types the code uses."""

from __future__ import annotations

from datetime import datetime
from functools import cache
from typing import Any

import msgspec

from clickstream_contract.answers import ErrorResponse, IngestResponse
from clickstream_contract.event import Event
from gateway.segment import (
    BROWSER_BATCH_PATH,
    BROWSER_TYPES,
    SINGLE_TYPES,
    SegmentMessage,
    SuccessResponse,
)
from gateway.settings import GatewaySettings


class BatchBody(msgspec.Struct, forbid_unknown_fields=True):
    """Body of `POST /v1/batch` as documented (the code keeps events raw to check each alone)."""

    events: list[Event]


class SegmentBatchBody(msgspec.Struct, rename="camel"):
    """Segment's batch body (the code keeps each message raw to map and check it alone)."""

    batch: list[SegmentMessage]
    sent_at: datetime | None = None
    context: dict[str, Any] | None = None


class AnalyticsJsMessage(SegmentMessage, rename="camel"):
    """A Segment message as analytics.js posts it, with the write key inside."""

    write_key: str | None = None


class AnalyticsJsBatchBody(SegmentBatchBody, rename="camel"):
    """Segment's batch body as analytics.js posts it, with the write key inside."""

    write_key: str | None = None


REF = "#/components/schemas/{name}"


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "application/json": {"schema": schema},
        "text/plain": {"schema": schema, "description": "JSON sent by navigator.sendBeacon"},
    }


def _error(description: str, error_ref: dict[str, Any], retry: bool = False) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": error_ref}},
    }
    if retry:
        response["headers"] = {
            "Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}
        }
    return response


@cache
def openapi_document(limits: GatewaySettings) -> dict[str, Any]:
    refs, components = msgspec.json.schema_components(
        [
            Event,
            BatchBody,
            IngestResponse,
            ErrorResponse,
            SegmentMessage,
            SegmentBatchBody,
            AnalyticsJsMessage,
            AnalyticsJsBatchBody,
            SuccessResponse,
        ],
        ref_template=REF,
    )
    (
        event_ref,
        batch_ref,
        ingest_ref,
        error_ref,
        segment_ref,
        segment_batch_ref,
        browser_ref,
        browser_batch_ref,
        success_ref,
    ) = refs
    accepted = {
        "202": {
            "description": "Accepted events are durably published; refused ones are listed "
            "with the rule and JSON path that failed (and kept as bad events).",
            "content": {"application/json": {"schema": ingest_ref}},
        }
    }
    success = {
        "200": {
            "description": "Segment's answer: the accepted messages are durably published; "
            "refused ones are listed by their index in the batch with the reason (and kept as "
            "bad events).",
            "content": {"application/json": {"schema": success_ref}},
        }
    }
    errors = {
        "400": _error("Body is not valid JSON (or not a batch object), or corrupt gzip", error_ref),
        "401": _error("Missing or unknown write key", error_ref),
        "413": _error(
            f"Over a limit: {limits.max_event_bytes} bytes per event, "
            f"{limits.max_request_bytes} bytes per request after decompression, "
            f"{limits.max_batch_events} events per batch",
            error_ref,
        ),
        "415": _error("Content type other than application/json or text/plain", error_ref),
        "429": _error("Publish queue full; retry after the given delay", error_ref, retry=True),
        "503": _error("Pub/Sub unavailable or the gateway is shutting down", error_ref, True),
    }
    parameters = [
        {
            "name": "Content-Encoding",
            "in": "header",
            "required": False,
            "schema": {"type": "string", "enum": ["gzip", "identity"]},
        }
    ]
    schemes = ("bearer", "basic", "writeKeyHeader", "writeKeyQuery")
    security: list[dict[str, list[str]]] = [{scheme: []} for scheme in schemes]

    def ingest(
        summary: str,
        body_ref: dict[str, Any],
        answers: dict[str, Any] = accepted,
        key_in_body: bool = False,
    ) -> dict[str, Any]:
        operation = {
            "summary": summary,
            "parameters": parameters,
            "requestBody": {"required": True, "content": _json(body_ref)},
            "responses": {**answers, **errors},
            # analytics.js's routes also take the key from the body's `writeKey`.
            "security": [*security, {}] if key_in_body else security,
        }
        return {"post": operation}

    segment_paths = {
        path: ingest(f"Segment {kind}: one message", segment_ref, success)
        for path, kind in SINGLE_TYPES.items()
    }
    segment_paths["/v1/import"] = ingest("Segment batch (imports)", segment_batch_ref, success)
    segment_paths |= {
        path: ingest(f"analytics.js {kind}", browser_ref, success, key_in_body=True)
        for path, kind in BROWSER_TYPES.items()
    }
    segment_paths[BROWSER_BATCH_PATH] = ingest(
        "analytics.js batch", browser_batch_ref, success, key_in_body=True
    )
    either_batch = {"anyOf": [batch_ref, segment_batch_ref]}

    def plain(summary: str, content_type: str = "text/plain") -> dict[str, Any]:
        return {
            "get": {
                "summary": summary,
                "responses": {"200": {"description": "OK", "content": {content_type: {}}}},
            }
        }

    readyz = plain("Ready: the publisher can reach its topic")
    readyz["get"]["responses"]["503"] = {"description": "Pub/Sub not reachable"}
    return {
        "openapi": "3.1.0",
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "info": {
            "title": "clickstream gateway",
            "version": "1",
            "description": "Collects e-commerce clickstream events and publishes them to Pub/Sub.",
        },
        "paths": {
            "/v1/events": ingest("Send one event", event_ref),
            "/v1/batch": ingest(
                "Send up to a batch of events (ours: 202; Segment's, by the body's shape: 200)",
                either_batch,
                {**accepted, **success},
            ),
            **segment_paths,
            "/health": plain("Process is up"),
            "/ready": readyz,
            "/healthz": plain("Process is up (for probes: Cloud Run's public URL keeps it)"),
            "/readyz": readyz,
            "/metrics": plain("Prometheus metrics"),
            "/openapi.json": plain("This document", "application/json"),
        },
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "basic": {
                    "type": "http",
                    "scheme": "basic",
                    "description": "The write key as user name, empty password",
                },
                "writeKeyHeader": {"type": "apiKey", "in": "header", "name": "X-Write-Key"},
                "writeKeyQuery": {"type": "apiKey", "in": "query", "name": "writeKey"},
            },
        },
    }
