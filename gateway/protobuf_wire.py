"""Protobuf's wire format, the little of it written by hand: base-128 varints.

The gateway frames its Publish requests itself (`gateway.pubsub.publish_request`), and the
built-in Pub/Sub emulator frames its pull responses the same way; both use this.
"""

from __future__ import annotations


def varint(value: int) -> bytes:
    """A non-negative integer as protobuf's base-128 varint (low groups first)."""
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)
