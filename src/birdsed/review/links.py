"""Addresses of the review page that other outputs link to (the report's detections): one card by its recording,
5 s row and species. Plain text, no web stack: the report builds these links without the review extra.

    card_url("woothr", "/data/a.wav", 15.0)   # http://127.0.0.1:8765/?file=%2Fdata%2Fa.wav&start_s=15&label=woothr

`birdsed review PRED` serves them: the page opens that card first, then the queue of its species in its recording.
"""

from __future__ import annotations

from urllib.parse import urlencode

REVIEW_HOST = "127.0.0.1"
REVIEW_PORT = 8765  # `birdsed review --port`'s default


def review_base(port: int = REVIEW_PORT, host: str = REVIEW_HOST) -> str:
    """The review page's address on `host`:`port`."""
    return f"http://{'[' + host + ']' if ':' in host else host}:{port}/"


def card_url(label: str, file: str, start_s: float, base: str | None = None) -> str:
    """The review page opened at one card: `file`'s 5 s row starting at start_s, for species `label`."""
    query = urlencode({"file": file, "start_s": f"{float(start_s):g}", "label": label})
    return f"{base or review_base()}?{query}"
