"""Gateway-only configuration, read from `CLICKSTREAM_GATEWAY_*` / `CLICKSTREAM_CORS_ORIGINS`.

Shared settings (project, emulator host, topics, write keys) stay in `clickstream_contract.config`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from gateway.client_ip import Network, parse_networks

TRUE = ("1", "true", "on", "yes")


# No slots: `from_env` reads the defaults back from the class attributes.
@dataclass(frozen=True)
class GatewaySettings:
    # Request limits; the defaults are the documented API contract.
    max_event_bytes: int = 32 * 1024
    max_request_bytes: int = 512 * 1024
    max_batch_events: int = 500
    # Browsers allowed to call the API cross-origin (exact origins, or "*").
    cors_origins: tuple[str, ...] = ()
    # Publisher: events wait at most `flush_ms` before a Publish RPC leaves; an RPC carries up
    # to `rpc_max_bytes` / `rpc_max_groups`; `max_inflight_rpcs` run concurrently. A short
    # wait keeps latency low; under load batches grow anyway while every RPC slot is busy
    # (3 ms left the worker half idle at 64 connections, waiting: 8k instead of 12k req/s).
    flush_ms: float = 0.5
    rpc_max_bytes: int = 4 * 1024 * 1024
    rpc_max_groups: int = 2000
    max_inflight_rpcs: int = 8
    # Bytes accepted but not yet published; beyond it requests get 429 (bounded memory).
    queue_max_bytes: int = 64 * 1024 * 1024
    # A Publish RPC is retried on transient errors until this deadline, then the waiting
    # requests get 503.
    publish_timeout_s: float = 30.0
    retry_after_s: int = 1
    # Security: X-Forwarded-For is read only from these proxies (CLICKSTREAM_TRUSTED_PROXIES,
    # CIDRs); stored client IPs are cut to /24 (v4) or /48 (v6) with CLICKSTREAM_IP_TRUNCATE.
    trusted_proxies: tuple[Network, ...] = ()
    ip_truncate: bool = False
    # A client address with this many failed authentications within the window gets 429.
    auth_max_failures: int = 20
    auth_window_s: float = 60.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> GatewaySettings:
        def number(name: str, default: float) -> float:
            raw = env.get(f"CLICKSTREAM_GATEWAY_{name}")
            if not raw:
                return default
            value = float(raw)
            if value <= 0:
                raise ValueError(f"CLICKSTREAM_GATEWAY_{name} must be positive, got {raw!r}")
            return value

        origins = tuple(
            o.strip().rstrip("/") for o in env.get("CLICKSTREAM_CORS_ORIGINS", "").split(",")
        )
        return cls(
            max_event_bytes=int(number("MAX_EVENT_BYTES", cls.max_event_bytes)),
            max_request_bytes=int(number("MAX_REQUEST_BYTES", cls.max_request_bytes)),
            max_batch_events=int(number("MAX_BATCH_EVENTS", cls.max_batch_events)),
            cors_origins=tuple(o for o in origins if o),
            flush_ms=number("FLUSH_MS", cls.flush_ms),
            rpc_max_bytes=int(number("RPC_MAX_BYTES", cls.rpc_max_bytes)),
            rpc_max_groups=int(number("RPC_MAX_GROUPS", cls.rpc_max_groups)),
            max_inflight_rpcs=int(number("MAX_INFLIGHT_RPCS", cls.max_inflight_rpcs)),
            queue_max_bytes=int(number("QUEUE_MAX_BYTES", cls.queue_max_bytes)),
            publish_timeout_s=number("PUBLISH_TIMEOUT_S", cls.publish_timeout_s),
            retry_after_s=int(number("RETRY_AFTER_S", cls.retry_after_s)),
            trusted_proxies=parse_networks(env.get("CLICKSTREAM_TRUSTED_PROXIES", "")),
            ip_truncate=env.get("CLICKSTREAM_IP_TRUNCATE", "").lower() in TRUE,
            auth_max_failures=int(number("AUTH_MAX_FAILURES", cls.auth_max_failures)),
            auth_window_s=number("AUTH_WINDOW_S", cls.auth_window_s),
        )
