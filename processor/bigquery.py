"""BigQuery sink: protobuf rows appended to each table's `_default` stream over gRPC.

The default stream is at-least-once (a retried or redelivered batch may land twice); readers
use the `events_dedup` view. Each `write` opens one AppendRows connection per table and
pipelines all its requests on it: the writer schema goes on the first request of the
connection, every request stays under BigQuery's 10 MB cap and names its `write_stream`.
Transient failures (UNAVAILABLE, INTERNAL, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, ABORTED)
retry the requests not yet acknowledged, on a new connection, with backoff. Rows BigQuery
refuses for their content (INVALID_ARGUMENT, row errors, a row larger than a request) raise
RowsRefused, which no retry can fix: the processor sets their message aside as a bad event.
Anything else (a missing table, permissions) raises BigQueryWriteError, so the caller nacks and
nothing is silently lost.

bqemulator 1.4.0, the local endpoint, shapes a few choices here:
- it forgets which stream a connection writes to unless every request names `write_stream`
  (real BigQuery needs it only on the first); we always set it.
- it copies the whole table into a time-travel snapshot on every append (our launcher,
  clickstream/emulators/bigquery.py, turns that off), and each append has a fixed cost of its
  own: we send few, large requests.
- it validates far less than BigQuery (unknown fields are ignored, REQUIRED is not enforced),
  so the sink checks the tables' schemas itself when it starts (`ensure_tables`) and the
  encoder refuses values a column cannot hold.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import grpc
from google.api_core import exceptions as api_exceptions
from google.cloud.bigquery_storage_v1 import types
from google.cloud.bigquery_storage_v1.services.big_query_write import BigQueryWriteAsyncClient
from google.cloud.bigquery_storage_v1.services.big_query_write.transports import (
    BigQueryWriteGrpcAsyncIOTransport,
)

from clickstream_contract.config import Settings
from processor.bigquery_rows import BAD_EVENT_ROWS, EVENT_ROWS, RowFormat
from processor.bigquery_schema import BAD_EVENTS, EVENTS, bigquery_client, ensure_dataset
from processor.records import BadEvent, EnrichedEvent, RefusedData

log = logging.getLogger(__name__)

# BigQuery refuses AppendRows requests of 10 MB or more; the writer schema, stream name and
# per-row framing must fit beside the rows.
MAX_REQUEST_BYTES = 10 * 1000 * 1000
REQUEST_HEADROOM_BYTES = 64 * 1024
TRANSIENT_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
    }
)
TRANSIENT_EXCEPTIONS = (
    api_exceptions.ServiceUnavailable,
    api_exceptions.InternalServerError,
    api_exceptions.DeadlineExceeded,
    api_exceptions.ResourceExhausted,
    api_exceptions.Aborted,
)
ATTEMPTS = 6
FIRST_BACKOFF_SECONDS = 0.2
MAX_BACKOFF_SECONDS = 10.0
CALL_TIMEOUT_SECONDS = 120.0

AppendRowsRequestPb = types.AppendRowsRequest.pb()


class BigQueryWriteError(RuntimeError):
    """BigQuery refused rows; `transient` tells whether retrying later may succeed."""

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


class RowsRefused(BigQueryWriteError, RefusedData):
    """BigQuery refused rows for what they hold: writing them again can never succeed."""


def framed_size(row: bytes) -> int:
    """Bytes a row takes inside ProtoRows: tag, length varint, payload."""
    return 1 + (len(row).bit_length() + 6) // 7 + len(row)


def split_rows(rows: Sequence[bytes], max_bytes: int) -> list[Sequence[bytes]]:
    """Consecutive chunks of `rows`, each framing to at most `max_bytes`."""
    chunks: list[Sequence[bytes]] = []
    start, size = 0, 0
    for index, row in enumerate(rows):
        row_size = framed_size(row)
        if row_size > max_bytes:
            raise RowsRefused(
                f"row {index} is {len(row)} bytes, more than one AppendRows request can carry"
            )
        if size + row_size > max_bytes:
            chunks.append(rows[start:index])
            start, size = index, 0
        size += row_size
    if start < len(rows):
        chunks.append(rows[start:])
    return chunks


def append_request(
    stream: str, chunk: Sequence[bytes], writer_schema: types.ProtoSchema | None
) -> types.AppendRowsRequest:
    # Built on the raw protobuf message: proto-plus would convert the rows one by one.
    request = AppendRowsRequestPb(write_stream=stream)
    if writer_schema is not None:
        request.proto_rows.writer_schema.CopyFrom(types.ProtoSchema.pb(writer_schema))
    request.proto_rows.rows.serialized_rows.extend(chunk)
    return types.AppendRowsRequest.wrap(request)


def response_error(response: types.AppendRowsResponse, table: str) -> BigQueryWriteError | None:
    if "error" not in response:
        return None
    code = grpc.StatusCode.UNKNOWN
    for status_code in grpc.StatusCode:
        if status_code.value[0] == response.error.code:
            code = status_code
    detail = f"AppendRows into {table} failed: {code.name}: {response.error.message}"
    if response.row_errors:
        detail += "; " + "; ".join(
            f"row {error.index}: {error.message}" for error in response.row_errors[:10]
        )
    if code == grpc.StatusCode.INVALID_ARGUMENT or response.row_errors:
        return RowsRefused(detail)
    return BigQueryWriteError(detail, transient=code in TRANSIENT_CODES)


@dataclass(frozen=True, slots=True)
class Target:
    table: str
    stream: str  # projects/P/datasets/D/tables/T/streams/_default
    rows: RowFormat
    writer_schema: types.ProtoSchema


def write_client(settings: Settings) -> BigQueryWriteAsyncClient:
    """The Storage Write API client; an insecure channel to the emulator when one is set."""
    host = settings.bigquery_storage_emulator_host
    if host is None:
        return BigQueryWriteAsyncClient()
    from google.auth.credentials import AnonymousCredentials

    # Room for a full 10 MB request (grpc's default send limit is 4 MB).
    options = [("grpc.max_send_message_length", 2 * MAX_REQUEST_BYTES)]
    channel = grpc.aio.insecure_channel(host, options=options)
    transport = BigQueryWriteGrpcAsyncIOTransport(
        channel=channel,
        credentials=AnonymousCredentials(),
    )
    return BigQueryWriteAsyncClient(transport=transport)


class BigQuerySink:
    """Appends enriched events to `events` and bad events to `bad_events`.

    Construct it inside the event loop that will call `write` (its gRPC channel belongs to
    that loop), after the tables exist: `await create_sink(settings)` does both.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        client: BigQueryWriteAsyncClient | None = None,
        max_request_bytes: int = MAX_REQUEST_BYTES,
        attempts: int = ATTEMPTS,
        first_backoff_seconds: float = FIRST_BACKOFF_SECONDS,
    ) -> None:
        self.client = client or write_client(settings)
        self.max_rows_bytes = max_request_bytes - REQUEST_HEADROOM_BYTES
        self.attempts = attempts
        self.first_backoff_seconds = first_backoff_seconds

        def target(table: str, rows: RowFormat) -> Target:
            path = (
                f"projects/{settings.project}/datasets/{settings.bigquery_dataset}/tables/{table}"
            )
            schema = types.ProtoSchema(proto_descriptor=rows.descriptor)
            return Target(table, f"{path}/streams/_default", rows, schema)

        self.events = target(EVENTS, EVENT_ROWS)
        self.bad_events = target(BAD_EVENTS, BAD_EVENT_ROWS)

    async def write(self, events: Sequence[EnrichedEvent], bad: Sequence[BadEvent]) -> None:
        """Append all rows, or raise (BigQueryWriteError, RowEncodingError): never a partial 'ok'.

        Rows of a failed call may still have been appended; at-least-once, deduplicated by
        `events_dedup`, so the caller simply nacks and the redelivery writes them again.
        """
        appends = []
        if events:
            appends.append(self.append(self.events, self.events.rows.encode(events)))
        if bad:
            appends.append(self.append(self.bad_events, self.bad_events.rows.encode(bad)))
        await asyncio.gather(*appends)

    async def append(self, target: Target, rows: Sequence[bytes]) -> None:
        pending = split_rows(rows, self.max_rows_bytes)
        for attempt in range(1, self.attempts + 1):
            acknowledged, failure = await self.send(target, pending)
            if failure is None:
                return
            pending = pending[acknowledged:]
            if attempt == self.attempts:
                raise failure
            backoff = min(MAX_BACKOFF_SECONDS, self.first_backoff_seconds * 2 ** (attempt - 1))
            log.warning("%s; retry %d in %.1fs", failure, attempt, backoff)
            await asyncio.sleep(backoff * random.uniform(0.5, 1.0))

    async def send(
        self, target: Target, chunks: Sequence[Sequence[bytes]]
    ) -> tuple[int, BigQueryWriteError | None]:
        """Pipeline `chunks` on one connection: (requests acknowledged, transient failure).

        Non-transient failures raise BigQueryWriteError.
        """

        async def requests() -> AsyncIterator[types.AppendRowsRequest]:
            for index, chunk in enumerate(chunks):
                schema = target.writer_schema if index == 0 else None
                yield append_request(target.stream, chunk, schema)

        acknowledged = 0
        try:
            call = await self.client.append_rows(
                requests=requests(),
                retry=None,  # a bidi stream's requests cannot be replayed; retried above
                timeout=CALL_TIMEOUT_SECONDS,
                metadata=(("x-goog-request-params", f"write_stream={target.stream}"),),
            )
            try:
                async for response in call:
                    error = response_error(response, target.table)
                    if error is not None:
                        if not error.transient:
                            raise error
                        return acknowledged, error
                    acknowledged += 1
            finally:
                # no-op once the server has closed the stream; typed as a plain AsyncIterable
                call.cancel()  # type: ignore[attr-defined]
        except TRANSIENT_EXCEPTIONS as exc:
            return acknowledged, BigQueryWriteError(
                f"AppendRows into {target.table}: {exc}", transient=True
            )
        except api_exceptions.InvalidArgument as exc:
            raise RowsRefused(f"AppendRows into {target.table}: {exc}") from exc
        except api_exceptions.GoogleAPICallError as exc:
            raise BigQueryWriteError(f"AppendRows into {target.table}: {exc}") from exc
        if acknowledged < len(chunks):
            return acknowledged, BigQueryWriteError(
                f"AppendRows into {target.table}: the stream ended after "
                f"{acknowledged} of {len(chunks)} requests",
                transient=True,
            )
        return acknowledged, None

    async def close(self) -> None:
        await self.client.transport.close()


def ensure_tables(settings: Settings) -> None:
    """Create the dataset, tables and views when missing; SchemaMismatchError on drift.

    Blocking (REST): from async code, `await asyncio.to_thread(ensure_tables, settings)`.
    """
    client = bigquery_client(settings)
    try:
        local = settings.bigquery_emulator_host is not None
        ensure_dataset(client, settings.bigquery_dataset, local=local)
    finally:
        client.close()


async def create_sink(settings: Settings) -> BigQuerySink:
    """Ensure the tables (and check their schemas), then connect the Storage Write client."""
    await asyncio.to_thread(ensure_tables, settings)
    return BigQuerySink(settings)
