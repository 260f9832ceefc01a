"""`clickstream up`: the whole platform on one machine, on embedded defaults.

PostgreSQL comes from `DATABASE_URL` or an embedded `pgserver` whose data lives in the state
folder; Pub/Sub and BigQuery from their emulator variables or the local emulators. Then the
schema, topics and tables are created, and gateway, processor and dashboard run as supervised
children: a child that dies is reported and restarted; Ctrl-C, SIGTERM or a closed terminal
(SIGHUP) stops them in order (load generator, gateway drains, processor finishes, dashboard,
emulators, database).

Children run in their own sessions so Ctrl-C reaches only this supervisor, which then stops
them one by one; each also gets SIGKILL from the kernel if the supervisor itself dies. Killed
outright (SIGKILL, the machine's OOM killer), the supervisor cannot stop what its children started
(the gateway's Granian workers) nor the embedded PostgreSQL (pgserver daemonizes it): the next
`up` in the same state folder stops those leftovers (clickstream.leftovers) and adopts the
PostgreSQL server (clickstream.local_postgres) before it starts anything.

`--demo` first fills the database with a week of history (dashboard.seed, the seeder of
`clickstream dashboard seed`, when the database has no events yet) and then simulates shoppers
at about the history's own rate, so the dashboard's first look shows a shape.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import secrets
import shlex
import shutil
import signal
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clickstream.leftovers import MARKER, StateDirBusy, claim_state_dir, stop_leftovers
from clickstream.local_postgres import postgres_url
from clickstream.local_state import remove_stack_env, state_dir, write_stack_env
from clickstream.push import positive
from clickstream.shoppers import CURRENCY as SHOP_CURRENCY
from clickstream_contract.config import BIGQUERY_ENV, LOCAL_PROJECT, REPORTING_CURRENCY_ENV

PR_SET_PDEATHSIG = 1
RESTART_BACKOFF_MAX = 30.0
STOP_TIMEOUT = 30.0
# What another process needs to join the running stack (written to the state folder).
STACK_VARIABLES = (
    "GOOGLE_CLOUD_PROJECT",
    "DATABASE_URL",
    "PUBSUB_EMULATOR_HOST",
    "BIGQUERY_EMULATOR_HOST",
    "BIGQUERY_STORAGE_EMULATOR_HOST",
    "CLICKSTREAM_WRITE_KEYS",
    "CLICKSTREAM_GATEWAY_URL",
    REPORTING_CURRENCY_ENV,
    BIGQUERY_ENV,
)


def die_with_parent() -> None:
    """Run in the child before exec: the kernel sends SIGKILL when the supervisor dies."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def wait_for_port(host: str, port: int, timeout: float, process: Child | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.exited:
            where = process.log_path or "its output above"
            raise RuntimeError(f"{process.name} exited while starting; see {where}")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout:.0f} s")


def read_or_create_secret(path: Path, nbytes: int = 18) -> str:
    """A per-state-folder secret (dev write key, dashboard password) that survives restarts."""
    if path.exists():
        return path.read_text().strip()
    value = secrets.token_urlsafe(nbytes)
    path.write_text(value + "\n")
    path.chmod(0o600)
    return value


@dataclass
class Child:
    """One supervised process: a `clickstream` subcommand with its own environment."""

    name: str
    args: Sequence[str]
    env: dict[str, str]
    restart: bool = True
    log_path: Path | None = None  # its output goes here rather than to the console
    process: asyncio.subprocess.Process | None = None
    restarts: int = 0
    stopping: bool = False
    started_at: float = 0.0
    watcher: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def exited(self) -> bool:
        return self.process is not None and self.process.returncode is not None

    async def start(self) -> None:
        self.started_at = time.monotonic()
        with contextlib.ExitStack() as files:
            output = None
            if self.log_path is not None:
                self.log_path.parent.mkdir(parents=True, exist_ok=True)
                output = files.enter_context(self.log_path.open("ab"))
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "clickstream_contract.cli",
                *self.args,
                env=self.env,
                stdout=output,
                stderr=asyncio.subprocess.STDOUT if output else None,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )

    async def stop(self) -> None:
        """SIGTERM, wait for a clean exit (drain), SIGKILL the group only if it hangs."""
        self.stopping = True
        if self.watcher is not None:
            self.watcher.cancel()
        process = self.process
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), STOP_TIMEOUT)
        except TimeoutError:
            log(f"{self.name} did not stop within {STOP_TIMEOUT:.0f} s; killing it")
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
        # Whatever the child started in its session goes with it.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)

    async def supervise(self) -> None:
        """Restart the child whenever it dies, with a backoff that resets after a good run."""
        backoff = 1.0
        while not self.stopping:
            assert self.process is not None
            code = await self.process.wait()
            if self.stopping:
                return
            if not self.restart:
                log(f"{self.name} finished (exit code {code})")
                return
            if time.monotonic() - self.started_at > 60:
                backoff = 1.0
            log(f"{self.name} exited with code {code}; restarting in {backoff:.0f} s")
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, RESTART_BACKOFF_MAX)
            if self.stopping:
                return
            self.restarts += 1
            await self.start()


def log(message: str) -> None:
    # A closed terminal fails every write (EIO); the stop in order must go on all the same.
    with contextlib.suppress(OSError):
        print(f"[clickstream up] {message}", file=sys.stderr, flush=True)


@dataclass
class Options:
    state_dir: Path
    host: str = "127.0.0.1"
    gateway_port: int = 8080
    dashboard_port: int = 8050
    pubsub_port: int = 8085
    # auto: Google's emulator when the Cloud SDK has it (the reference), else the built-in one,
    # which costs ~8x less CPU per byte (benchmarks/README.md, end to end).
    pubsub_emulator: str = "auto"
    bigquery_port: int = 9050
    bigquery_grpc_port: int = 9060
    # pull: the streaming-pull worker, batches of up to 20,000 events per transaction, the
    # fastest on one machine (see benchmarks/README.md, push topology). push: Pub/Sub pushes
    # into the Cloud Function as deployed, `instances` processes behind `function_port`.
    processor: str = "pull"
    instances: int = 2
    function_port: int = 8090
    # Off: no BigQuery emulator, and the processor acks after PostgreSQL alone (the pipeline's
    # throughput without the emulator, which is slower than BigQuery itself).
    bigquery: bool = True
    demo: bool = False
    # The seeded week averages ~0.8 events/s (busier afternoons); live shoppers at about that
    # rate continue it instead of towering over it.
    demo_rate: float = 1.0
    demo_days: int = 7
    demo_events: int = 500_000


async def run(options: Options) -> int:
    # The supervisor speaks gRPC (topics, tables) and then forks its services. With gRPC's fork
    # support on, its fork handlers ran in each child between fork and exec and crashed one now
    # and then (an `epoll_wait` error, then a gateway that exited without a word). Nothing here
    # forks to go on using gRPC, so they are off; set before gRPC is first imported.
    os.environ["GRPC_ENABLE_FORK_SUPPORT"] = "false"
    options.state_dir.mkdir(parents=True, exist_ok=True)
    try:
        lock = claim_state_dir(options.state_dir)
    except StateDirBusy as error:
        raise SystemExit(f"clickstream up: {error}") from None
    with lock:
        if leftovers := stop_leftovers(options.state_dir):
            log(f"stopped {len(leftovers)} processes left running by an earlier, killed run")
        log("starting PostgreSQL")
        # DATABASE_URL when set, else the embedded server, kept in the state folder (one left
        # running by a killed run is adopted); it stops last.
        with postgres_url(options.state_dir / "postgres") as database_url:
            await serve(options, database_url)
    log("stopped")
    return 0


async def serve(options: Options, database_url: str) -> None:
    write_key = read_or_create_secret(options.state_dir / "write-key")
    dashboard_password = read_or_create_secret(options.state_dir / "dashboard-password")
    env = dict(os.environ)
    env.update(
        DATABASE_URL=database_url,
        CLICKSTREAM_WRITE_KEYS=f"{write_key}=local",
        CLICKSTREAM_DASHBOARD_PASSWORD=dashboard_password,
        PYTHONUNBUFFERED="1",
    )
    env.setdefault("GOOGLE_CLOUD_PROJECT", LOCAL_PROJECT)
    # Revenue is reported in the currency the local shop (loadgen, demo, README) sells in.
    env.setdefault(REPORTING_CURRENCY_ENV, SHOP_CURRENCY)
    # Inherited by whatever the children start: how the next `up` finds leftovers of this one.
    env[MARKER] = str(options.state_dir.resolve())
    # The emulators' own chatter (Google's logs every connection) goes to files, not the console.
    logs = options.state_dir / "logs"
    emulators: list[Child] = []
    if not env.get("PUBSUB_EMULATOR_HOST"):
        env["PUBSUB_EMULATOR_HOST"] = f"{options.host}:{options.pubsub_port}"
        emulators.append(
            Child(
                "pubsub-emulator",
                [
                    *("emulator", "pubsub", "--host", options.host),
                    *("--port", str(options.pubsub_port), "--impl", options.pubsub_emulator),
                ],
                env,
                log_path=logs / "pubsub-emulator.log",
            )
        )
    if not options.bigquery:
        env[BIGQUERY_ENV] = "off"
        for name in ("BIGQUERY_EMULATOR_HOST", "BIGQUERY_STORAGE_EMULATOR_HOST"):
            env.pop(name, None)
    elif not env.get("BIGQUERY_EMULATOR_HOST"):
        env["BIGQUERY_EMULATOR_HOST"] = f"http://{options.host}:{options.bigquery_port}"
        env["BIGQUERY_STORAGE_EMULATOR_HOST"] = f"{options.host}:{options.bigquery_grpc_port}"
        emulators.append(
            Child(
                "bigquery-emulator",
                [
                    "emulator",
                    "bigquery",
                    "--host",
                    options.host,
                    "--port",
                    str(options.bigquery_port),
                    "--grpc-port",
                    str(options.bigquery_grpc_port),
                    "--data-dir",
                    str(options.state_dir / "bigquery"),
                ],
                env,
                log_path=logs / "bigquery-emulator.log",
            )
        )
    gateway_url = f"http://{options.host}:{options.gateway_port}"
    dashboard_url = f"http://{options.host}:{options.dashboard_port}"
    env["CLICKSTREAM_GATEWAY_URL"] = gateway_url
    # Granian's own start lines would repeat what the banner says; its warnings still show.
    quiet = ("--server-log-level", "warning")
    services = [
        Child(
            "gateway",
            ["gateway", "--host", options.host, "--port", str(options.gateway_port), *quiet],
            env,
        ),
        Child("processor", processor_args(options), env),
        Child(
            "dashboard",
            ["dashboard", "--host", options.host, "--port", str(options.dashboard_port), *quiet],
            env,
        ),
    ]
    if options.demo:
        services.append(
            Child(
                "loadgen",
                [
                    "loadgen",
                    "--url",
                    gateway_url,
                    "--write-key",
                    write_key,
                    "--rate",
                    str(options.demo_rate),
                    "--quiet",
                ],
                env,
            )
        )

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    # SIGHUP: the terminal was closed; stop in order as for Ctrl-C.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(sig, stop.set)

    started: list[Child] = []
    try:
        for child in emulators:
            log(f"starting {child.name}")
            await child.start()
            started.append(child)
        await asyncio.to_thread(wait_for_ports, emulators, options)
        await prepare(env, push_endpoint(options))
        if options.demo:
            await seed_demo_history(database_url, options)
        for child in services:
            await child.start()
            started.append(child)
        await asyncio.to_thread(wait_for_port, options.host, options.gateway_port, 60, services[0])
        await asyncio.to_thread(
            wait_for_port, options.host, options.dashboard_port, 60, services[2]
        )
        if options.processor == "push":
            await asyncio.to_thread(
                wait_for_port, options.host, options.function_port, 60, services[1]
            )
        for child in started:
            child.watcher = asyncio.create_task(child.supervise())
        write_stack_env(
            options.state_dir, {name: env[name] for name in STACK_VARIABLES if env.get(name)}
        )
        print_banner(gateway_url, dashboard_url, options, env)
        await stop.wait()
        log("stopping")
    finally:
        remove_stack_env(options.state_dir)
        # In the order events flow: the gateway drains into Pub/Sub before the processor
        # finishes its last batch; the emulators go after everything that uses them.
        order = [c for c in started if c.name == "loadgen"]
        order += [c for c in started if c.name == "gateway"]
        order += [c for c in started if c.name == "processor"]
        order += [c for c in started if c.name == "dashboard"]
        order += [c for c in reversed(started) if c not in order]
        for child in order:
            log(f"stopping {child.name}")
            await child.stop()


def processor_args(options: Options) -> list[str]:
    """The streaming-pull worker, or the function's instances that Pub/Sub pushes to."""
    if options.processor == "pull":
        return ["processor"]
    return [
        "function",
        "--host",
        options.host,
        "--port",
        str(options.function_port),
        "--instances",
        str(options.instances),
    ]


def push_endpoint(options: Options) -> str | None:
    if options.processor == "pull":
        return None
    host = f"[{options.host}]" if ":" in options.host else options.host
    return f"http://{host}:{options.function_port}"


def wait_for_ports(emulators: list[Child], options: Options) -> None:
    ports = {"pubsub-emulator": options.pubsub_port, "bigquery-emulator": options.bigquery_port}
    for child in emulators:
        wait_for_port(options.host, ports[child.name], 120, child)


async def prepare(env: dict[str, str], push_endpoint: str | None = None) -> None:
    """Schema, topics, subscriptions (pushing to `push_endpoint`, else pulled) and BigQuery
    tables, before any service starts."""
    from clickstream.pubsub_admin import ensure_topology
    from clickstream_contract.config import Settings
    from processor.bigquery import ensure_tables
    from processor.migrations import migrate
    from processor.sinks import bigquery_enabled

    settings = Settings.from_env(env)
    log("applying database migrations")
    assert settings.database_url is not None
    await migrate(settings.database_url)
    log("creating Pub/Sub topics and subscriptions")
    await ensure_topology(settings, push_endpoint)
    if bigquery_enabled(settings, env):
        log("creating BigQuery dataset and tables")
        await asyncio.to_thread(ensure_tables, settings)


async def seed_demo_history(database_url: str, options: Options) -> None:
    """A week of history before the demo's live shoppers, unless the database has events."""
    from dashboard.seed import HAS_DATA_SQL, seed_database
    from processor.db import connect

    conn = await connect(database_url)
    try:
        if await conn.fetchval(HAS_DATA_SQL):
            log("demo: the database has events already; no history seeded")
            return
    finally:
        await conn.close()
    log(
        f"demo: seeding {options.demo_days} days of history "
        f"({options.demo_events:,} events; once, the first time)"
    )
    log(
        "demo: "
        + await seed_database(database_url, events=options.demo_events, days=options.demo_days)
    )


def cli_command() -> str:
    """How the person who started `up` runs the other commands: `./dev` when it started `up`
    (it says so in CLICKSTREAM_CLI), else `clickstream` if that is what PATH finds, else the
    script's full path."""
    if command := os.environ.get("CLICKSTREAM_CLI"):
        return command
    script = Path(sys.executable).parent / "clickstream"
    if not script.exists():
        return f"{shlex.quote(sys.executable)} -m clickstream_contract.cli"
    found = shutil.which("clickstream")
    if found is not None and Path(found).resolve() == script.resolve():
        return "clickstream"
    return shlex.quote(str(script))


def print_banner(
    gateway_url: str, dashboard_url: str, options: Options, env: dict[str, str]
) -> None:
    folder = options.state_dir
    command = cli_command()
    if folder.resolve() != state_dir().resolve():
        # The tools look for ./.clickstream (or CLICKSTREAM_STATE_DIR): name this one.
        command = f"CLICKSTREAM_STATE_DIR={shlex.quote(str(folder.resolve()))} {command}"
    variables = "\n".join(
        f"  {name:<31} {env[name]}"
        for name in STACK_VARIABLES
        if env.get(name) and name != "CLICKSTREAM_WRITE_KEYS"
    )
    processor = "the streaming-pull worker (--processor push: as deployed)"
    if options.processor == "push":
        processor = (
            f"{options.instances} Cloud Function instance(s) at {push_endpoint(options)},"
            " Pub/Sub pushes into them"
        )
    bigquery = ""
    if not options.bigquery:
        bigquery = f"\n  {'BigQuery':<31} off (--no-bigquery): no event history kept"
    demo = ""
    if options.demo:
        demo = (
            f"\nDEMO MODE: {options.demo_days} days of seeded history, and simulated shoppers "
            f"sending events at about {options.demo_rate:g}/s (--demo-rate).\n"
        )
    print(
        f"""
clickstream is running.
{demo}
  gateway                         {gateway_url}   (POST /v1/events, /v1/batch; /openapi.json)
  dashboard                       {dashboard_url}   (password in {folder / "dashboard-password"})
  dev write key                   {(folder / "write-key").read_text().strip()}
  processor                       {processor}{bigquery}
{variables}
  logs of the emulators           {folder / "logs"}

Commands, runnable as printed from this folder (they find this stack through {folder}):
  {command} loadgen --rate 200 --duration 60
      simulated shoppers for a minute
  {command} loadgen --count 1000 --ids-file ids.txt
  {command} audit ids.txt
      send 1,000 events, then check that each one was stored (once the processor caught up)
  eval "$({command} env)"
      this stack's variables in your shell, to start another part by hand

Stop with Ctrl-C (or SIGTERM, or by closing the terminal): everything stops in order and
nothing is left running.
""",
        flush=True,
    )


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "up",
        help="run the whole platform locally (gateway, processor, dashboard, emulators)",
        description="Run the whole platform on this machine: PostgreSQL (DATABASE_URL, else an "
        "embedded server), the Pub/Sub and BigQuery emulators (unless PUBSUB_EMULATOR_HOST / "
        "BIGQUERY_EMULATOR_HOST name others), then gateway, processor and dashboard, "
        "restarted when they die. Ctrl-C stops everything in order.",
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=state_dir(),
        help="data, secrets and logs of the local stack; the other commands find the running "
        "stack there (default: %(default)s, or CLICKSTREAM_STATE_DIR)",
    )
    parser.add_argument(
        "--host", default=Options.host, help="address every service binds (default: %(default)s)"
    )
    ports = (
        ("--gateway-port", Options.gateway_port, "the gateway's HTTP port"),
        ("--dashboard-port", Options.dashboard_port, "the dashboard's HTTP port"),
        ("--pubsub-port", Options.pubsub_port, "the Pub/Sub emulator's port"),
        ("--bigquery-port", Options.bigquery_port, "the BigQuery emulator's REST port"),
        (
            "--bigquery-grpc-port",
            Options.bigquery_grpc_port,
            "the BigQuery emulator's Storage Write API (gRPC) port",
        ),
        ("--function-port", Options.function_port, "the function's port, with --processor push"),
    )
    for flag, default, what in ports:
        parser.add_argument(flag, type=int, default=default, help=f"{what} (default: %(default)s)")
    parser.add_argument(
        "--pubsub-emulator",
        choices=("auto", "google", "builtin"),
        default=Options.pubsub_emulator,
        help="auto: Google's when the Cloud SDK has it, else the built-in one (default: "
        "%(default)s)",
    )
    parser.add_argument(
        "--processor",
        choices=("pull", "push"),
        default=Options.processor,
        help="pull: the streaming-pull worker (fastest here); push: Pub/Sub pushes into the "
        "Cloud Function as Terraform deploys it (default: %(default)s)",
    )
    parser.add_argument(
        "--instances",
        type=positive,
        default=Options.instances,
        help="function instances with --processor push, each with its own PostgreSQL pool "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--no-bigquery",
        dest="bigquery",
        action="store_false",
        help="no BigQuery emulator: the processor writes PostgreSQL alone (default: BigQuery on)",
    )
    parser.add_argument(
        "--demo",
        action="store_true",
        help="demo mode: seed --demo-days of history (when the database has no events) and "
        "simulate shoppers at --demo-rate (default: off)",
    )
    parser.add_argument(
        "--demo-rate",
        type=float,
        default=Options.demo_rate,
        help="events per second the demo's shoppers send (default: %(default)s)",
    )
    parser.add_argument(
        "--demo-days",
        type=int,
        default=Options.demo_days,
        help="days of history the demo seeds (default: %(default)s)",
    )
    parser.add_argument(
        "--demo-events",
        type=int,
        default=Options.demo_events,
        help="events in the demo's seeded history (default: %(default)s)",
    )
    parser.set_defaults(
        func=lambda args: asyncio.run(
            run(
                Options(
                    **{k: v for k, v in vars(args).items() if k in Options.__dataclass_fields__}
                )
            )
        )
    )
