"""`clickstream audit FILE`: reconcile a load generator's accepted ids with what the sinks hold.

Every id the gateway accepted must end up in PostgreSQL's `event_ids` (or, if the processor
could not process it, in `bad_events`) and, when BigQuery is configured, in its `events_dedup`
view. The audit reads the ids file (`clickstream loadgen --ids-file`), looks them up in bulk
(`= ANY($1::uuid[])` in chunks; one scan of `bad_events`, whose raw payloads are searched for
`"event_id": "..."`), and reports counts, what is missing and what is duplicated.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TypeVar

from clickstream_contract.config import LOCAL_PROJECT, Settings

CHUNK: Final = 50_000
# How many missing or duplicated ids a report lists (all of them are counted).
LIST_LIMIT: Final = 20

# The first `"event_id": "<uuid>"` in each raw payload (several for a whole refused batch).
# `encode(raw, 'escape')` turns any bytes, valid UTF-8 or not, into searchable text.
BAD_EVENT_IDS_SQL: Final = r"""
SELECT m[1]::uuid AS event_id, count(*) AS n
FROM bad_events,
     regexp_matches(
         encode(raw, 'escape'),
         '"event_id"\s*:\s*"([0-9A-Fa-f]{8}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{12})"',
         'g') AS m
WHERE m[1]::uuid = ANY($1::uuid[])
GROUP BY 1
"""

# The local BigQuery emulator (bqemulator) runs every query on its single DuckDB connection and
# refuses one, with a 400 "Resource In Use Error: connection is busy with another call", while
# an append (the processor writing) holds that connection. Real BigQuery never answers this.
# The audit only reads, so such a query is asked again after each of these pauses (~10 s in all).
BUSY_REFUSAL: Final = "connection is busy"
BUSY_RETRY_DELAYS: Final = (0.25, 0.5, 1.0, 2.0, 3.0, 3.0)

T = TypeVar("T")


class IdsFileError(ValueError):
    pass


def read_ids(path: Path) -> list[uuid.UUID]:
    """The ids in `path`, one per line (blank lines ignored); a bad line is named."""
    ids = []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            text = line.strip()
            if not text:
                continue
            try:
                ids.append(uuid.UUID(text))
            except ValueError:
                raise IdsFileError(f"{path}:{number}: not a UUID: {text[:60]!r}") from None
    return ids


def chunks(items: Sequence[uuid.UUID], size: int = CHUNK) -> Iterable[Sequence[uuid.UUID]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


@dataclass
class BigQueryResult:
    found: set[uuid.UUID] = field(default_factory=set)
    # ids with more than one row in the raw `events` table (at-least-once appends; the view
    # hides them) and, which would be a bug, in `events_dedup`.
    raw_duplicates: dict[uuid.UUID, int] = field(default_factory=dict)
    view_duplicates: dict[uuid.UUID, int] = field(default_factory=dict)


@dataclass
class Report:
    ids: list[uuid.UUID]
    in_events: set[uuid.UUID]
    in_bad_events: Counter[uuid.UUID]
    bigquery: BigQueryResult | None
    bigquery_skipped: str | None = None

    @property
    def unique(self) -> set[uuid.UUID]:
        return set(self.ids)

    @property
    def file_duplicates(self) -> dict[uuid.UUID, int]:
        return {i: n for i, n in Counter(self.ids).items() if n > 1}

    @property
    def missing_postgres(self) -> list[uuid.UUID]:
        return sorted(self.unique - self.in_events - set(self.in_bad_events))

    @property
    def missing_bigquery(self) -> list[uuid.UUID]:
        if self.bigquery is None:
            return []
        return sorted(self.unique - self.bigquery.found)

    @property
    def ok(self) -> bool:
        return not (
            self.missing_postgres
            or self.missing_bigquery
            or self.file_duplicates
            or (self.bigquery and self.bigquery.view_duplicates)
        )

    def summary(self) -> dict[str, Any]:
        def listed(ids: Iterable[uuid.UUID]) -> list[str]:
            return [str(i) for i in list(ids)[:LIST_LIMIT]]

        bq = self.bigquery
        return {
            "ids": len(self.ids),
            "unique_ids": len(self.unique),
            "duplicate_ids_in_file": len(self.file_duplicates),
            "postgres_events": len(self.in_events),
            "postgres_bad_events": len(self.in_bad_events),
            "postgres_bad_event_duplicates": sum(1 for n in self.in_bad_events.values() if n > 1),
            "missing_postgres": len(self.missing_postgres),
            "missing_postgres_ids": listed(self.missing_postgres),
            "bigquery_events_dedup": None if bq is None else len(bq.found),
            "bigquery_raw_duplicates": None if bq is None else len(bq.raw_duplicates),
            "bigquery_view_duplicates": None if bq is None else len(bq.view_duplicates),
            "missing_bigquery": None if bq is None else len(self.missing_bigquery),
            "missing_bigquery_ids": listed(self.missing_bigquery),
            "bigquery_skipped": self.bigquery_skipped,
            "ok": bool(self.ok),
        }

    def text(self) -> str:
        s = self.summary()
        lines = [
            f"ids in file            {s['ids']:>10,}  ({s['unique_ids']:,} unique, "
            f"{s['duplicate_ids_in_file']:,} listed more than once)",
            f"PostgreSQL events      {s['postgres_events']:>10,}",
            f"PostgreSQL bad_events  {s['postgres_bad_events']:>10,}"
            f"  ({s['postgres_bad_event_duplicates']:,} with several rows)",
            f"missing in PostgreSQL  {s['missing_postgres']:>10,}",
        ]
        if self.bigquery is None:
            lines.append(f"BigQuery               skipped: {self.bigquery_skipped}")
        else:
            lines += [
                f"BigQuery events_dedup  {s['bigquery_events_dedup']:>10,}"
                f"  ({s['bigquery_raw_duplicates']:,} appended more than once to `events`,"
                f" deduplicated by the view)",
                f"missing in BigQuery    {s['missing_bigquery']:>10,}",
            ]
            if s["bigquery_view_duplicates"]:
                lines.append(f"DUPLICATED in events_dedup: {s['bigquery_view_duplicates']:,}")
        for title, key in (
            ("missing in PostgreSQL", "missing_postgres_ids"),
            ("missing in BigQuery", "missing_bigquery_ids"),
        ):
            if s[key]:
                lines.append(f"{title} (first {LIST_LIMIT}):")
                lines += [f"  {i}" for i in s[key]]
        lines.append("OK: every id accounted for" if self.ok else "INCOMPLETE")
        return "\n".join(lines)


async def postgres_lookup(
    database_url: str | None, ids: Sequence[uuid.UUID], *, chunk_size: int = CHUNK
) -> tuple[set[uuid.UUID], Counter[uuid.UUID]]:
    """(ids stored (`event_ids`, the sink's dedup keys), ids found in `bad_events` raw payloads
    with their row count)."""
    from processor.db import connect

    unique = list(dict.fromkeys(ids))
    conn = await connect(database_url)
    try:
        found: set[uuid.UUID] = set()
        for chunk in chunks(unique, chunk_size):
            rows = await conn.fetch(
                "SELECT event_id FROM event_ids WHERE event_id = ANY($1::uuid[])", chunk
            )
            found.update(row["event_id"] for row in rows)
        # One scan of bad_events for all ids: it is small next to `event_ids`, and scanning it
        # once per chunk would multiply the work.
        bad = Counter(
            {row["event_id"]: row["n"] for row in await conn.fetch(BAD_EVENT_IDS_SQL, unique)}
        )
        return found, bad
    finally:
        await conn.close()


def bigquery_skip_reason(settings: Settings) -> str | None:
    """Why BigQuery is skipped (not configured), or None when it can be queried."""
    if settings.bigquery_emulator_host or settings.project != LOCAL_PROJECT:
        return None
    return (
        "neither BIGQUERY_EMULATOR_HOST nor GOOGLE_CLOUD_PROJECT is set "
        "(set one to audit BigQuery too)"
    )


def retry_while_busy(query: Callable[[], T], delays: Sequence[float] = BUSY_RETRY_DELAYS) -> T:
    """`query()`, asked again after each of `delays` while the emulator refuses it as busy
    (`BUSY_REFUSAL`); any other error, and the refusal once the delays are spent, is raised."""
    from google.api_core.exceptions import BadRequest

    for delay in delays:
        try:
            return query()
        except BadRequest as error:
            if BUSY_REFUSAL not in str(error):
                raise
        time.sleep(delay)
    return query()


def bigquery_counts(client: Any, table: str, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, int]:
    """Rows per id in `table` (a fully qualified table or view), for the ids present; a query
    the local emulator refuses as busy is asked again (`retry_while_busy`)."""
    from google.cloud import bigquery

    config = bigquery.QueryJobConfig(
        query_parameters=[bigquery.ArrayQueryParameter("ids", "STRING", [str(i) for i in ids])]
    )
    sql = (
        f"SELECT event_id, COUNT(*) AS n FROM `{table}` "
        "WHERE event_id IN UNNEST(@ids) GROUP BY event_id"
    )

    def counts() -> dict[uuid.UUID, int]:
        # Iterating the job waits for its result: a refusal surfaces there, inside the retry.
        rows = client.query(sql, job_config=config)
        return {uuid.UUID(row["event_id"]): row["n"] for row in rows}

    return retry_while_busy(counts)


def bigquery_lookup(settings: Settings, ids: Sequence[uuid.UUID]) -> BigQueryResult:
    from processor.bigquery_schema import EVENTS, EVENTS_DEDUP, bigquery_client

    client = bigquery_client(settings)
    dataset = f"{settings.project}.{settings.bigquery_dataset}"
    result = BigQueryResult()
    try:
        for chunk in chunks(list(dict.fromkeys(ids)), 10_000):
            view = bigquery_counts(client, f"{dataset}.{EVENTS_DEDUP}", chunk)
            result.found.update(view)
            result.view_duplicates.update({i: n for i, n in view.items() if n > 1})
            raw = bigquery_counts(client, f"{dataset}.{EVENTS}", chunk)
            result.raw_duplicates.update({i: n for i, n in raw.items() if n > 1})
    finally:
        client.close()
    return result


async def audit(path: Path, settings: Settings, *, use_bigquery: bool = True) -> Report:
    import asyncio

    ids = read_ids(path)
    in_events, in_bad = await postgres_lookup(settings.database_url, ids)
    skipped = bigquery_skip_reason(settings) if use_bigquery else "--no-bigquery"
    bq = None
    if skipped is None:
        bq = await asyncio.to_thread(bigquery_lookup, settings, ids)
    return Report(ids, in_events, in_bad, bq, skipped)
