"""What the collector may put into a request to the Web App.

A token ends up in an HTTP header (``Authorization: Token <token>``) and the Web App's
address in the request line. A character HTTP cannot carry there (CR, LF, any other
control character, anything outside ASCII) or an address with credentials in it
(``https://user:pw@host``, which aiohttp refuses beside an ``Authorization`` header)
makes every request for a document fail before it is sent - so such settings are
refused where they are made (the service's settings at start, ``collector devices``),
and the delivery agent dead-letters a document whose request cannot be built rather
than trying it again and again.
"""

from __future__ import annotations

from urllib.parse import urlsplit


class RequestError(ValueError):
    """A request to the Web App cannot be built (the reason names the setting)."""


def header_problem(value: str, what: str) -> str | None:
    """Why ``value`` cannot be sent as (part of) an HTTP header value, or None."""
    for i, ch in enumerate(value):
        o = ord(ch)
        if o < 0x20 or o == 0x7F or o > 0x7E:
            name = {"\r": "a carriage return (CR)", "\n": "a line feed (LF)"}.get(ch, f"the character {ch!r}")
            return f"{what} contains {name} at position {i}: it cannot be sent in an HTTP header"
    return None


def url_problem(url: str, what: str = "webapp_url") -> str | None:
    """Why ``url`` cannot be the Web App's address, or None."""
    if not url.startswith(("http://", "https://")):
        return f"{what} must start with http:// or https://"
    if any(ord(ch) <= 0x20 or ord(ch) == 0x7F for ch in url):
        return f"{what} contains a space or a control character"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError as e:
        return f"{what} is not a valid URL: {e}"
    if not parts.hostname:
        return f"{what} names no host"
    if parts.username is not None or parts.password is not None:
        return (f"{what} must not carry credentials (user:password@); give the upload token "
                "(webapp_token) or the login (webapp_username, webapp_password) instead")
    return None


def check_token(value: str | None, what: str) -> None:
    """Raise :class:`RequestError` when ``value`` cannot be sent as a token."""
    if value:
        problem = header_problem(value, what)
        if problem:
            raise RequestError(problem)


def check_request(url: str, headers: dict[str, str]) -> None:
    """Raise :class:`RequestError` when a request to ``url`` with ``headers`` cannot
    be built (checked before it is attempted, so the answer is the same every time)."""
    problem = url_problem(url, "the upload URL")
    if problem:
        raise RequestError(problem)
    for k, v in headers.items():
        problem = header_problem(v, f"the {k} header")
        if problem:
            raise RequestError(problem)
