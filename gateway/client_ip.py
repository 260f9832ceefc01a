"""Which address a request came from: the TCP peer, or `X-Forwarded-For` from trusted proxies.

`X-Forwarded-For` is written by every hop, so anyone can put anything at its left end. It is
read only when the peer is a configured proxy (`CLICKSTREAM_TRUSTED_PROXIES`, CIDRs), and then
from the right: each hop that is itself a trusted proxy is skipped, and the first one that is
not is the client. With `CLICKSTREAM_IP_TRUNCATE`, the address kept with the events loses its
host part (IPv4 to /24, IPv6 to /48), as privacy settings ask.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import Final

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

TRUNCATE_V4: Final = 24
TRUNCATE_V6: Final = 48


def parse_networks(value: str) -> tuple[Network, ...]:
    """`"10.0.0.0/8, 2001:db8::/32, 127.0.0.1"` -> networks; a bad entry is named."""
    networks = []
    for item in value.split(","):
        item = item.strip()
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(f"CLICKSTREAM_TRUSTED_PROXIES: {item!r} is not a CIDR") from None
    return tuple(networks)


# Parsing and formatting an address costs ~3 µs per request; clients repeat, so both are cached.
@lru_cache(maxsize=4096)
def _address(text: str) -> Address | None:
    text = text.strip()
    if text.startswith("[") and "]" in text:  # [v6]:port
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # v4:port
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


def truncate(address: Address) -> Address:
    prefix = TRUNCATE_V4 if address.version == 4 else TRUNCATE_V6
    return ipaddress.ip_network(f"{address}/{prefix}", strict=False).network_address


class ClientAddresses:
    def __init__(self, trusted: Sequence[Network], truncate_ips: bool) -> None:
        self.trusted = tuple(trusted)
        self.truncate_ips = truncate_ips

    def _trusted(self, address: Address) -> bool:
        return any(address in network for network in self.trusted)

    def client(self, peer: str | None, forwarded_for: Iterable[bytes]) -> Address | None:
        """The client's full address (for rate limits); None when the server gives no peer."""
        current = _address(peer) if peer else None
        if current is None or not self.trusted or not self._trusted(current):
            return current
        hops = [h for value in forwarded_for for h in value.decode("latin-1").split(",")]
        for hop in reversed(hops):
            address = _address(hop)
            if address is None:  # garbage from an untrusted hop: stop at the last good one
                break
            current = address
            if not self._trusted(address):
                break
        return current

    def stored(self, address: Address | None) -> str | None:
        """The address as kept with the events: truncated when privacy settings ask."""
        if address is None:
            return None
        return _stored(address, self.truncate_ips)


@lru_cache(maxsize=4096)
def _stored(address: Address, truncate_ips: bool) -> str:
    return str(truncate(address) if truncate_ips else address)
