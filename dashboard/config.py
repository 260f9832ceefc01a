"""The dashboard's settings, read from the environment once at start-up.

Access control is mandatory: Identity-Aware Proxy when CLICKSTREAM_DASHBOARD_IAP_AUDIENCE is set,
else a password (CLICKSTREAM_DASHBOARD_PASSWORD_HASH, or CLICKSTREAM_DASHBOARD_PASSWORD in plain
text for local development, hashed at start-up). With neither, the dashboard refuses to start
unless `--insecure-no-auth` was given.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from clickstream_contract.config import Settings
from dashboard.auth import check_password_hash, hash_password

AuthMode = Literal["iap", "password", "none"]


class ConfigError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class DashboardConfig:
    database_url: str | None
    auth: AuthMode
    secret: bytes
    password_hash: str | None = None
    iap_audience: str | None = None
    currency: str = Settings.reporting_currency  # the processor's reporting currency
    poll_seconds: float = 5.0
    session_hours: int = 12

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] = os.environ, *, insecure_no_auth: bool = False
    ) -> DashboardConfig:
        secret = env.get("CLICKSTREAM_DASHBOARD_SECRET")
        try:
            settings = Settings.from_env(env)
        except ValueError as error:
            raise ConfigError(str(error)) from None
        common = {
            "database_url": settings.database_url,
            # A random secret per start logs everyone out on restart, which is acceptable.
            "secret": secret.encode() if secret else secrets.token_bytes(32),
            # Revenue is stored converted to the processor's reporting currency: the same setting.
            "currency": settings.reporting_currency,
            "poll_seconds": float(env.get("CLICKSTREAM_DASHBOARD_POLL_SECONDS") or 5),
        }
        audience = env.get("CLICKSTREAM_DASHBOARD_IAP_AUDIENCE")
        if audience:
            return cls(auth="iap", iap_audience=audience, **common)  # type: ignore[arg-type]
        password_hash = env.get("CLICKSTREAM_DASHBOARD_PASSWORD_HASH")
        if password_hash:
            check_password_hash(password_hash)
        elif env.get("CLICKSTREAM_DASHBOARD_PASSWORD"):
            password_hash = hash_password(env["CLICKSTREAM_DASHBOARD_PASSWORD"])
        if password_hash:
            return cls(auth="password", password_hash=password_hash, **common)  # type: ignore[arg-type]
        if insecure_no_auth:
            return cls(auth="none", **common)  # type: ignore[arg-type]
        raise ConfigError(
            "the dashboard needs access control: set CLICKSTREAM_DASHBOARD_PASSWORD_HASH (from "
            "`clickstream dashboard hash-password`), CLICKSTREAM_DASHBOARD_PASSWORD (local "
            "development) or CLICKSTREAM_DASHBOARD_IAP_AUDIENCE (behind Identity-Aware Proxy), "
            "or pass --insecure-no-auth for a local demo"
        )
