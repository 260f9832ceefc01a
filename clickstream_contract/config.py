"""Configuration shared by every component, read from the environment once at start-up.

Each component reads only the fields it needs. Names follow Google's own variables where one
exists (`GOOGLE_CLOUD_PROJECT`, `PUBSUB_EMULATOR_HOST`); the rest are `CLICKSTREAM_*`.
"""

from __future__ import annotations

import os
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

LOCAL_PROJECT = "clickstream-local"

# As the official clients set them: Pub/Sub requests and responses may exceed gRPC's 4 MB
# default (every part that opens its own channel to Pub/Sub uses these).
PUBSUB_CHANNEL_OPTIONS = (
    ("grpc.max_send_message_length", -1),
    ("grpc.max_receive_message_length", -1),
)


def parse_write_keys(value: str) -> dict[str, str]:
    """`key1=source1,key2` -> {key: source}; a key without `=source` is its own source name.

    Several keys may map to one source, which is how keys are rotated without downtime.
    """
    keys: dict[str, str] = {}
    for item in value.split(","):
        item = item.strip()
        if not item:
            continue
        key, _, source = item.partition("=")
        key, source = key.strip(), source.strip()
        if not key:
            raise ValueError("CLICKSTREAM_WRITE_KEYS has an entry with an empty key")
        keys[key] = source or key
    return keys


REPORTING_CURRENCY_ENV = "CLICKSTREAM_REPORTING_CURRENCY"
# Whether the processor writes BigQuery: on | off | auto (processor/sinks.py).
BIGQUERY_ENV = "CLICKSTREAM_BIGQUERY"
_CURRENCY_CODE = re.compile(r"[A-Z]{3}")


def parse_currency(value: str, name: str) -> str:
    """An ISO 4217 code as the contract spells currencies (`EUR`); `name` is the setting."""
    code = value.strip()
    if not _CURRENCY_CODE.fullmatch(code):
        raise ValueError(f"{name} must be a three-letter ISO 4217 code such as EUR, not {value!r}")
    return code


# No slots: `from_env` reads the defaults back from the class attributes.
@dataclass(frozen=True)
class Settings:
    project: str = LOCAL_PROJECT
    pubsub_emulator_host: str | None = None
    events_topic: str = "events"
    bad_events_topic: str = "events-bad"
    dead_letter_topic: str = "events-dead-letter"
    events_subscription: str = "events-processor"
    bad_events_subscription: str = "events-bad-processor"
    # Keeps dead-lettered messages for inspection; nothing consumes it automatically.
    dead_letter_subscription: str = "events-dead-letter-hold"
    database_url: str | None = None
    bigquery_dataset: str = "clickstream"
    # REST endpoint of a BigQuery emulator (http://127.0.0.1:9050); unset means real BigQuery.
    bigquery_emulator_host: str | None = None
    # gRPC endpoint of the emulator's Storage Write API (127.0.0.1:9060).
    bigquery_storage_emulator_host: str | None = None
    write_keys: dict[str, str] = field(default_factory=dict)
    # Revenue is converted to and reported in this currency (ISO 4217; processor/currency.py).
    reporting_currency: str = "EUR"

    def topic_path(self, topic: str) -> str:
        return f"projects/{self.project}/topics/{topic}"

    def subscription_path(self, subscription: str) -> str:
        return f"projects/{self.project}/subscriptions/{subscription}"

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Settings:
        def get(name: str, default: str) -> str:
            return env.get(name) or default

        return cls(
            project=env.get("GOOGLE_CLOUD_PROJECT") or env.get("GCLOUD_PROJECT") or LOCAL_PROJECT,
            pubsub_emulator_host=env.get("PUBSUB_EMULATOR_HOST") or None,
            events_topic=get("CLICKSTREAM_EVENTS_TOPIC", cls.events_topic),
            bad_events_topic=get("CLICKSTREAM_BAD_EVENTS_TOPIC", cls.bad_events_topic),
            dead_letter_topic=get("CLICKSTREAM_DEAD_LETTER_TOPIC", cls.dead_letter_topic),
            events_subscription=get("CLICKSTREAM_EVENTS_SUBSCRIPTION", cls.events_subscription),
            bad_events_subscription=get(
                "CLICKSTREAM_BAD_EVENTS_SUBSCRIPTION", cls.bad_events_subscription
            ),
            dead_letter_subscription=get(
                "CLICKSTREAM_DEAD_LETTER_SUBSCRIPTION", cls.dead_letter_subscription
            ),
            database_url=env.get("DATABASE_URL") or None,
            bigquery_dataset=get("CLICKSTREAM_BIGQUERY_DATASET", cls.bigquery_dataset),
            bigquery_emulator_host=env.get("BIGQUERY_EMULATOR_HOST") or None,
            bigquery_storage_emulator_host=env.get("BIGQUERY_STORAGE_EMULATOR_HOST") or None,
            write_keys=parse_write_keys(env.get("CLICKSTREAM_WRITE_KEYS", "")),
            reporting_currency=parse_currency(
                get(REPORTING_CURRENCY_ENV, cls.reporting_currency), REPORTING_CURRENCY_ENV
            ),
        )


# PostgreSQL: `DATABASE_URL` names the server and may omit the password; Cloud Functions and the
# dashboard VM get the password from Secret Manager as `CLICKSTREAM_DB_PASSWORD`, which asyncpg
# then uses (it wins over one in the URL). The password never appears in logs: only the URL's
# host and database do (`describe_database`).
DB_PASSWORD_ENV = "CLICKSTREAM_DB_PASSWORD"
# The server's CA certificate (PEM), to verify the server (libpq's `verify-ca`): in the cloud,
# the Cloud SQL instance's CA. Cloud SQL names the instance in its certificate, not the private
# IP clients dial, so the host name is not checked; the chain is.
DB_SERVER_CA_ENV = "CLICKSTREAM_DB_SERVER_CA"


class DatabaseConfigError(ValueError):
    pass


def connect_options(
    database_url: str | None, env: Mapping[str, str] = os.environ
) -> dict[str, Any]:
    """asyncpg keyword arguments for `DATABASE_URL` plus the optional password secret and
    server CA (which, when set, replaces the URL's sslmode with verification against it)."""
    if not database_url:
        raise DatabaseConfigError(
            "DATABASE_URL is not set (e.g. postgresql://clickstream@127.0.0.1:5432/clickstream)"
        )
    options: dict[str, Any] = {"dsn": database_url}
    password = env.get(DB_PASSWORD_ENV)
    if password:
        options["password"] = password
    server_ca = env.get(DB_SERVER_CA_ENV)
    if server_ca:
        try:
            context = ssl.create_default_context(cadata=server_ca)
        except ssl.SSLError as exc:
            raise DatabaseConfigError(f"{DB_SERVER_CA_ENV}: not a PEM certificate ({exc})") from exc
        context.check_hostname = False
        options["ssl"] = context
    return options


def describe_database(database_url: str) -> str:
    """The URL without credentials, for logs: host (or socket folder), port and database."""
    parts = urlsplit(database_url)
    socket_dir = parse_qs(parts.query).get("host")
    host = socket_dir[0] if socket_dir else parts.hostname or "localhost"
    return f"{host}:{parts.port or 5432}{parts.path}"
