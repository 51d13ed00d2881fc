"""The one blocking HTTP client of the tests and tools (standard library only).

Its convention: every HTTP answer, 4xx and 5xx included, is returned as an
:class:`HTTPResult`; only a request that got no answer (refused, reset, timed out,
bad URL) raises, as :class:`OSError` (``urllib.error.URLError`` or ``TimeoutError``).
Callers turn that into their own error (the radio rig's :class:`~hil.bench.ApiError`,
the bridge's ``status None``) in one place.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any


class HTTPResult:
    def __init__(self, status: int, body: bytes, headers: dict[str, str]):
        self.status = status
        self.body = body
        self.headers = headers

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def __repr__(self) -> str:
        return f"HTTPResult({self.status}, {self.body[:200]!r})"


def http(method: str, url: str, body: bytes | dict | list | None = None, headers: dict[str, str] | None = None,
         timeout: float = 30.0, *, token: str | None = None, compact: bool = False) -> HTTPResult:
    """One blocking HTTP request; 4xx/5xx are returned, not raised.

    A dict or list ``body`` is sent as JSON (``compact``: without spaces);
    ``token`` adds ``Authorization: Bearer``."""
    h = dict(headers or {})
    data: bytes | None
    if isinstance(body, dict | list):
        data = (json.dumps(body, separators=(",", ":")) if compact else json.dumps(body)).encode()
        h.setdefault("Content-Type", "application/json")
    else:
        data = body
    if token:
        h["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=data, method=method, headers=h)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return HTTPResult(resp.status, resp.read(), dict(resp.headers))
    except urllib.error.HTTPError as e:
        return HTTPResult(e.code, e.read(), dict(e.headers))
