"""Who may see the dashboard: a password login with a signed session cookie, or Google's IAP.

Password hashes are scrypt (stdlib) with a random salt: `scrypt$n$r$p$salt$hash` (base64).
Session cookies are `payload.signature`, the payload a base64 JSON {"sub", "exp"} and the
signature HMAC-SHA256 under the dashboard secret; both comparisons are constant-time.
Behind Identity-Aware Proxy, every request carries `x-goog-iap-jwt-assertion`, an ES256 JWT
signed by Google; it is verified (signature, expiry, audience, issuer) on every request.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import httpx
from google.auth import jwt

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
IAP_HEADER = "x-goog-iap-jwt-assertion"
IAP_ISSUER = "https://cloud.google.com/iap"
# Google's IAP signing keys as {key id: PEM public key}.
IAP_KEYS_URL = "https://www.gstatic.com/iap/verify/public_key"


class AuthError(Exception):
    """A credential that does not prove who the caller is; the message says why."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def hash_password(password: str, salt: bytes | None = None) -> str:
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.scrypt(
        password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32
    )
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def check_password_hash(encoded: str) -> None:
    """Raise ValueError naming the problem if `encoded` is not a hash from hash_password."""
    parts = encoded.split("$")
    if len(parts) != 6 or parts[0] != "scrypt" or not all(p.isdigit() for p in parts[1:4]):
        raise ValueError(
            "CLICKSTREAM_DASHBOARD_PASSWORD_HASH: not a scrypt$n$r$p$salt$hash value "
            "(make one with `clickstream dashboard hash-password`)"
        )


def verify_password(password: str, encoded: str) -> bool:
    check_password_hash(encoded)
    _, n, r, p, salt, digest = encoded.split("$")
    candidate = hashlib.scrypt(
        password.encode(),
        salt=_unb64(salt),
        n=int(n),
        r=int(r),
        p=int(p),
        dklen=32,
        maxmem=256 * 1024 * 1024,
    )
    return hmac.compare_digest(candidate, _unb64(digest))


def sign_session(subject: str, secret: bytes, lifetime_s: int, now: float | None = None) -> str:
    now = time.time() if now is None else now
    payload = _b64(json.dumps({"sub": subject, "exp": int(now + lifetime_s)}).encode())
    signature = _b64(hmac.new(secret, payload.encode(), hashlib.sha256).digest())
    return f"{payload}.{signature}"


def read_session(token: str, secret: bytes, now: float | None = None) -> str:
    """The subject of a valid, unexpired session token; AuthError otherwise."""
    payload, _, signature = token.partition(".")
    expected = _b64(hmac.new(secret, payload.encode(), hashlib.sha256).digest())
    if not hmac.compare_digest(signature.encode(), expected.encode()):
        raise AuthError("session cookie: bad signature")
    claims = json.loads(_unb64(payload))
    if claims["exp"] < (time.time() if now is None else now):
        raise AuthError("session cookie: expired")
    return str(claims["sub"])


KeySource = Callable[[], Awaitable[Mapping[str, str]]]


def http_key_source(url: str = IAP_KEYS_URL, ttl_s: float = 3600) -> KeySource:
    """Fetch {key id: PEM} from `url`, cached for `ttl_s` (Google rotates IAP keys slowly)."""
    cache: dict[str, Any] = {"keys": None, "at": 0.0}

    async def keys() -> Mapping[str, str]:
        if cache["keys"] is None or time.monotonic() - cache["at"] > ttl_s:
            async with httpx.AsyncClient(timeout=10) as client:
                response = await client.get(url)
                response.raise_for_status()
            cache["keys"], cache["at"] = response.json(), time.monotonic()
        return cache["keys"]

    return keys


async def verify_iap_assertion(token: str, audience: str, keys: KeySource) -> str:
    """The email (else subject) of a valid IAP assertion for `audience`; AuthError otherwise."""
    try:
        claims = jwt.decode(token, certs=await keys(), audience=audience)
    except ValueError as error:  # google.auth raises ValueError subclasses for bad tokens
        raise AuthError(f"{IAP_HEADER}: {error}") from None
    if claims.get("iss") != IAP_ISSUER:
        raise AuthError(f"{IAP_HEADER}: issuer {claims.get('iss')!r} is not {IAP_ISSUER}")
    return str(claims.get("email") or claims["sub"])
