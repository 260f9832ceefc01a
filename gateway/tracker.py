"""The browser tracker (clickstream.js, an ES module beside this file), served by the gateway.

The gateway serves it at `TRACKER_PATH`, so a shop includes it with one script tag; a new
incompatible version gets a new path (/sdk/v2/...) while old pages keep working.
"""

from __future__ import annotations

from importlib.resources import files
from typing import Final

TRACKER_PATH: Final = "/sdk/v1/clickstream.js"
TRACKER_CONTENT_TYPE: Final = "text/javascript; charset=utf-8"


def tracker_script() -> bytes:
    return files("gateway").joinpath("clickstream.js").read_bytes()
