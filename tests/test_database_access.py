"""How the deployed components reach PostgreSQL: the dashboard's role reads every table of the
migrated schema and writes none (processor/migrations/301_dashboard_reader.sql), the processor's
role writes rows but cannot change the schema (302_processor_writer.sql), and clients given the
server's CA verify the server's certificate against it (verify-ca)."""

from __future__ import annotations

import asyncio
import datetime
import ssl
import uuid
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from processor_testing import a_day_of_traffic, aggregate_mismatches, envelope_of

from clickstream_contract import envelope
from clickstream_contract.config import DB_SERVER_CA_ENV, DatabaseConfigError, connect_options
from processor import db, identities
from processor.core import Message, Processor
from processor.migrations import SchemaNotMigratedError, migrate, require_migrated
from processor.postgres import PostgresSink, create_sink_pool

READER = "clickstream_dashboard"
WRITES = ("INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")


async def privileges(conn: asyncpg.Connection, privilege: str) -> dict[str, bool]:
    rows = await conn.fetch(
        "SELECT c.relname, has_table_privilege($1, c.oid, $2) AS granted"
        " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm')",
        READER,
        privilege,
    )
    return {row["relname"]: row["granted"] for row in rows}


async def test_the_dashboard_role_reads_every_table_and_writes_none(
    fresh_database_url: str,
) -> None:
    await migrate(fresh_database_url)
    conn = await asyncpg.connect(fresh_database_url)
    try:
        # A table a later migration creates, as the role that runs migrations.
        await conn.execute("CREATE TABLE later_rollup (day date PRIMARY KEY, n bigint)")
        readable = await privileges(conn, "SELECT")
        assert {"sessions", "bad_events", "schema_migrations", "later_rollup"} <= set(readable)
        assert all(readable.values()), [t for t, ok in readable.items() if not ok]
        for write in WRITES:
            granted = await privileges(conn, write)
            assert not any(granted.values()), (write, [t for t, ok in granted.items() if ok])
        # What the grants say holds for a session running as the role.
        async with conn.transaction():
            await conn.execute(f"SET LOCAL ROLE {READER}")
            assert await conn.fetchval("SELECT count(*) FROM later_rollup") == 0
            try:
                await conn.execute("INSERT INTO later_rollup VALUES (current_date, 1)")
            except asyncpg.InsufficientPrivilegeError:
                pass
            else:
                raise AssertionError(f"{READER} could insert")
    finally:
        await conn.close()


# --- the processor's role --------------------------------------------------------------------

WRITER = "clickstream_processor"
SCHEMA_CHANGES = (
    "CREATE TABLE intruder (id int)",
    "DROP TABLE sessions",
    "ALTER TABLE sessions ADD COLUMN extra int",
    "TRUNCATE bad_events",
    "CREATE INDEX intruder_idx ON sessions (session_id)",
)


def as_user(url: str, user: str) -> str:
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}@{host}"))


async def test_the_processor_role_writes_rows_and_cannot_change_the_schema(
    fresh_database_url: str,
) -> None:
    await migrate(fresh_database_url)
    login = f"t_processor_{uuid.uuid4().hex[:10]}"  # roles are per server: one per test
    admin = await asyncpg.connect(fresh_database_url)
    await admin.execute(f"CREATE ROLE {login} LOGIN IN ROLE {WRITER}")
    # A table a later migration creates is written like the others.
    await admin.execute("CREATE TABLE later_rollup (day date PRIMARY KEY, n bigint)")
    url = as_user(fresh_database_url, login)
    try:
        await require_migrated(url)  # what the function and the worker check at start
        pool = await create_sink_pool(url, max_size=2)
        try:
            events = a_day_of_traffic(visitors=6)
            await Processor(PostgresSink(pool), []).process(
                [
                    Message(
                        message_id=uuid.uuid4().hex,
                        data=envelope_of(events),
                        attributes=envelope.attributes("events", len(events)),
                    )
                ]
            )
            async with pool.acquire() as conn:
                await identities.merge_pending(conn)
                assert await conn.fetchval("SELECT count(*) FROM event_ids") == len(events)
                assert await aggregate_mismatches(conn, events) == {}
                assert await conn.fetchval("SELECT count(*) FROM identities") > 0
                await db.prune(conn, timedelta(0))
                assert await conn.fetchval("SELECT count(*) FROM event_ids") == 0
                await conn.execute("INSERT INTO later_rollup VALUES (current_date, 1)")
                for statement in SCHEMA_CHANGES:
                    with pytest.raises(asyncpg.InsufficientPrivilegeError):
                        await conn.execute(statement)
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await conn.execute("DELETE FROM schema_migrations")
        finally:
            await pool.close()
        # A schema behind the code stops the processor with the command that fixes it.
        await admin.execute("DELETE FROM schema_migrations WHERE version = '302_processor_writer'")
        with pytest.raises(
            SchemaNotMigratedError, match=r"302_processor_writer.*clickstream db migrate"
        ):
            await require_migrated(url)
    finally:
        await admin.execute(f"DROP OWNED BY {login}")
        await admin.execute(f"DROP ROLE {login}")
        await admin.close()


# --- verify-ca ---------------------------------------------------------------------------------


def certificate(
    name: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None,
) -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer[0].subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    return builder.sign(issuer[1] if issuer else key, hashes.SHA256())


def pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


async def tls_server(
    tmp_path: Path, ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey]
) -> tuple[asyncio.Server, int]:
    """A server that answers PostgreSQL's SSLRequest and completes the TLS handshake with a
    certificate the CA signed, naming an instance (as Cloud SQL's do), not the address dialled;
    then hangs up."""
    key = ec.generate_private_key(ec.SECP256R1())
    cert = certificate("my-project:clickstream-pg", key, ca)
    (tmp_path / "server.pem").write_text(pem(cert))
    (tmp_path / "server.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "server.pem", tmp_path / "server.key")

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readexactly(8)  # SSLRequest
            writer.write(b"S")
            await writer.drain()
            await writer.start_tls(context)
        except (ssl.SSLError, ConnectionError, asyncio.IncompleteReadError):
            pass  # the client refused the certificate
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def test_clients_given_the_server_ca_verify_the_servers_certificate(tmp_path: Path) -> None:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (certificate("Cloud SQL Server CA", ca_key, None), ca_key)
    other_key = ec.generate_private_key(ec.SECP256R1())
    other_ca = certificate("another CA", other_key, None)
    server, port = await tls_server(tmp_path, ca)
    url = f"postgresql://clickstream@127.0.0.1:{port}/clickstream?sslmode=verify-ca"
    try:
        async with server:
            # Signed by another CA: refused during the handshake.
            options = connect_options(url, {DB_SERVER_CA_ENV: pem(other_ca)})
            with pytest.raises(ssl.SSLCertVerificationError):
                await asyncpg.connect(**options, timeout=5)
            # Signed by the instance's CA: the handshake passes (then this server hangs up).
            options = connect_options(url, {DB_SERVER_CA_ENV: pem(ca[0])})
            with pytest.raises(
                (ConnectionError, asyncpg.exceptions.ConnectionDoesNotExistError)
            ) as raised:
                await asyncpg.connect(**options, timeout=5)
            assert not isinstance(raised.value, ssl.SSLError)
    finally:
        server.close()


def test_a_server_ca_that_is_no_certificate_is_refused_by_name() -> None:
    with pytest.raises(DatabaseConfigError, match=DB_SERVER_CA_ENV):
        connect_options("postgresql://u@h/d", {DB_SERVER_CA_ENV: "not a certificate"})
