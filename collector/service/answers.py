"""What the collector keeps of a Web App answer: a bounded, redacted prefix.

The body of an answer is read only up to what is kept (a 400 MB error page must not
take the process's memory with it), and every secret the request carried (the
upload token, the login password and token) is replaced by ``***`` before the text
is stored with the attempt and served by ``/api/messages/{id}`` or
``collector deadletters show``: a Web App that echoes the request's headers in its
error page must not turn the store into a copy of the token.
"""

from __future__ import annotations

from collections.abc import Iterable

import aiohttp

#: kept of a response body, for the attempt log and the dead-letter record
RESPONSE_KEEP = 2000
REDACTED = "***"


async def read_prefix(resp: aiohttp.ClientResponse, limit: int) -> tuple[bytes, bool]:
    """At most ``limit`` bytes of the body, and whether that was all of it. The rest is
    never read: the caller closes the connection instead of draining it."""
    buf = bytearray()
    while len(buf) < limit:
        chunk = await resp.content.read(limit - len(buf))
        if not chunk:
            return bytes(buf), True
        buf += chunk
    return bytes(buf), resp.content.at_eof()


def redact(text: str | None, secrets: Iterable[str | None]) -> str | None:
    """``text`` with every occurrence of each secret (at least 4 characters: a shorter
    one would blank out ordinary words) replaced by ``***``."""
    if not text:
        return text
    for s in sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True):
        text = text.replace(s, REDACTED)
    return text


async def kept_text(resp: aiohttp.ClientResponse, secrets: Iterable[str | None]) -> str:
    """The kept, redacted prefix of ``resp``'s body as text. Reads a little beyond the
    kept length so that a secret straddling the cut is still recognised, and closes
    the connection when the body was longer (aiohttp would otherwise keep reading
    it to reuse the connection)."""
    marks = sorted({s.encode() for s in secrets if s and len(s) >= 4}, key=len, reverse=True)
    raw, whole = await read_prefix(resp, RESPONSE_KEEP + max(map(len, marks), default=0))
    if not whole:
        resp.close()
    for m in marks:
        raw = raw.replace(m, REDACTED.encode())
    if not whole:  # the start of a secret cut off by the read: drop it too
        for m in marks:
            k = next((k for k in range(min(len(m), len(raw)), 0, -1) if raw.endswith(m[:k])), 0)
            raw = raw[:len(raw) - k]
    return raw[:RESPONSE_KEEP].decode("utf-8", "replace")
