"""Delivery of documents to the Web App (``docs/spec/xml-format.md`` §2).

The policy is sans-IO and deterministic: :func:`classify` says what an answer
means, :class:`Backoff` draws exponential backoff with full jitter from its own
seeded random stream (honouring ``Retry-After``), :class:`Circuit` stops requests
while the Web App is failing, and :func:`decide` turns one attempt into the next
state of the document. :class:`DeliveryAgent` is the thin aiohttp shell around it:
it reads due documents from the store, posts them with a concurrency limit, and
commits each attempt.

(Above 400 lines: the policy and the shell that applies it are read together; what
is kept of an answer lives in :mod:`collector.service.answers`.)
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import logging
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING

import aiohttp

from collector.service.answers import kept_text, redact
from collector.service.clock import wait_first
from collector.service.outbound import RequestError, check_request, check_token
from collector.service.store import AttemptResult, GroupCommitter, Store, StoreUnavailable, op_attempt

if TYPE_CHECKING:
    from collector.service.clock import Clock
    from collector.service.config import ServiceConfig
    from collector.service.metrics import Metrics

log = logging.getLogger("collector.delivery")

RETRYABLE_STATUS = frozenset({408, 425, 429})
#: first wait, and the longest, before an attempt whose outcome the store could not
#: record is written again (seconds, doubling in between)
RECORD_RETRY_FIRST = 1.0
RECORD_RETRY_MAX = 60.0


# --------------------------------------------------------------------------- policy (sans-IO)


def classify(status: int | None) -> str:
    """``delivered``, ``retry`` or ``dead`` for an HTTP status (None: no answer -
    refused, reset or timed out)."""
    if status is None:
        return "retry"
    if 200 <= status < 300 or status == 409:
        return "delivered"
    if status in RETRYABLE_STATUS or status >= 500:
        return "retry"
    return "dead"


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta seconds or an HTTP date)."""
    if not value:
        return None
    v = value.strip()
    if v.isdigit():
        return float(v)
    try:
        dt = email.utils.parsedate_to_datetime(v)
    except (TypeError, ValueError):
        return None
    if dt is None:
        return None
    return max(0.0, dt.timestamp() - now)


class Backoff:
    """Exponential backoff with full jitter: attempt ``n`` (0-based) waits a uniform
    draw from ``[0, min(cap, base * 2**n)]``, and never less than ``Retry-After``."""

    def __init__(self, base: float, cap: float, rng: random.Random):
        self.base = base
        self.cap = cap
        self.rng = rng

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        ceiling = min(self.cap, self.base * 2 ** min(attempt, 62))
        d = self.rng.uniform(0.0, ceiling)
        if retry_after is not None:
            d = max(d, min(retry_after, self.cap * 24))
        return d


class Circuit:
    """Closed → (``threshold`` consecutive failures) → open for ``reset`` seconds →
    half-open: one probe; its success closes the circuit, its failure opens it again.
    ``hold(until)`` keeps it open until a time the Web App asked for (Retry-After)."""

    def __init__(self, threshold: int, reset: float):
        self.threshold = max(1, threshold)
        self.reset = reset
        self.failures = 0
        self.open_until: float | None = None
        self.probing = False

    def state(self, now: float) -> str:
        if self.open_until is None:
            return "closed"
        return "open" if now < self.open_until else "half-open"

    def allow(self, now: float) -> bool:
        """Whether a request may start now (in half-open state: one at a time)."""
        st = self.state(now)
        if st == "closed":
            return True
        if st == "open" or self.probing:
            return False
        self.probing = True
        return True

    def success(self) -> None:
        self.failures = 0
        self.open_until = None
        self.probing = False

    def failure(self, now: float) -> None:
        self.failures += 1
        if self.probing or self.failures >= self.threshold:
            self.open_until = now + self.reset
        self.probing = False

    def neutral(self) -> None:
        """An answer that says nothing about the Web App's health (e.g. a 4xx)."""
        self.probing = False

    def hold(self, until: float) -> None:
        if self.open_until is None or until > self.open_until:
            self.open_until = until


@dataclass
class Attempt:
    """What one delivery attempt saw."""

    status: int | None
    error: str | None = None
    response: str | None = None
    retry_after: float | None = None
    duration: float | None = None


def decide(uid: str, attempt: Attempt, attempts_before: int, created: float, now: float, max_age: float,
           backoff: Backoff) -> AttemptResult:
    """The document's next state after ``attempt`` (its ``attempts_before`` + 1-th)."""
    kind = classify(attempt.status)
    r = AttemptResult(uid=uid, at=now, result=kind, status=attempt.status, error=attempt.error,
                      response=attempt.response, duration=attempt.duration)
    if kind == "dead":
        r.dead_reason = f"the Web App answered {attempt.status}"
    elif kind == "retry":
        nxt = now + backoff.delay(attempts_before, attempt.retry_after)
        if nxt - created > max_age:
            r.result = "dead"
            r.dead_reason = (f"not delivered within the maximum age of {max_age:.0f} s "
                             f"(last: {attempt.status or attempt.error})")
        else:
            r.next_attempt = nxt
    return r


# --------------------------------------------------------------------------- aiohttp shell


class LoginError(RuntimeError):
    pass


class DeliveryAgent:
    """Posts due documents to the Web App and records every attempt."""

    def __init__(self, cfg: ServiceConfig, store: Store, committer: GroupCommitter, clock: Clock,
                 metrics: Metrics | None = None):
        self.cfg = cfg
        self.store = store
        self.committer = committer
        self.clock = clock
        self.metrics = metrics
        self.backoff = Backoff(cfg.backoff_base, cfg.backoff_cap, random.Random(cfg.seed))
        self.circuit = Circuit(cfg.circuit_threshold, cfg.circuit_reset)
        self._sem = asyncio.Semaphore(cfg.delivery_concurrency)
        self._in_flight: dict[str, asyncio.Task] = {}
        self._wake = asyncio.Event()
        self._session: aiohttp.ClientSession | None = None
        self._login_token: str | None = None
        self._login_lock = asyncio.Lock()
        self._start_lock = asyncio.Lock()
        self._task: asyncio.Task | None = None
        self._stopping = False
        #: attempts made whose outcome the store could not record yet (e.g. the disk is
        #: full): their documents are not sent again while the write is retried
        self._unrecorded: dict[str, AttemptResult] = {}
        self._record_failures = 0
        self._record_retry_at = 0.0

    @property
    def enabled(self) -> bool:
        return bool(self.cfg.webapp_url)

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    def _busy(self) -> list[str]:
        """Documents not to start now: in flight, or attempted with the outcome not yet recorded."""
        return [*self._in_flight, *self._unrecorded]

    async def record_pending(self) -> None:
        """Write the outcomes the store could not take before, once their back-off
        (1, 2, 4 ... 60 s on the event loop's monotonic clock) has passed."""
        loop = asyncio.get_running_loop()
        if not self._unrecorded or loop.time() < self._record_retry_at:
            return
        results = list(self._unrecorded.values())
        try:
            await self.committer.submit_many([op_attempt(r) for r in results])
        except StoreUnavailable as e:
            self._record_failures += 1
            wait = min(RECORD_RETRY_MAX, RECORD_RETRY_FIRST * 2 ** min(self._record_failures - 1, 10))
            self._record_retry_at = loop.time() + wait
            log.error("event=attempt_not_recorded count=%d error=%r retry_in=%g", len(results), str(e), wait)
            return
        for r in results:
            self._unrecorded.pop(r.uid, None)
        self._record_failures = 0
        log.info("event=attempts_recorded count=%d", len(results))

    def wake(self) -> None:
        """New work (a document queued, a dead letter retried)."""
        self._wake.set()

    async def start(self) -> None:
        timeout = aiohttp.ClientTimeout(total=self.cfg.request_timeout)
        self._session = aiohttp.ClientSession(timeout=timeout)
        if self.enabled:
            self._task = asyncio.get_running_loop().create_task(self._loop(), name="delivery")

    async def stop(self) -> None:
        """Stop starting attempts, let the ones in flight finish (bounded), close."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._in_flight:
            await asyncio.wait(list(self._in_flight.values()), timeout=self.cfg.request_timeout)
        if self._unrecorded:  # one last try: otherwise they are sent again after the restart
            self._record_retry_at = 0.0
            await self.record_pending()
        if self._session is not None:
            await self._session.close()

    # ------------------------------------------------------------------ scheduling

    async def _loop(self) -> None:
        while not self._stopping:
            self._wake.clear()
            try:
                await self.record_pending()
                await self.start_due()
            except Exception:  # noqa: BLE001 - keep delivering whatever went wrong once
                log.exception("event=delivery_loop_error")
            now = self.clock.now()
            wake_at = await asyncio.to_thread(self.store.next_due, self._busy())
            if wake_at is not None and self.circuit.open_until is not None:
                wake_at = max(wake_at, self.circuit.open_until)
            waiters = [self._wake.wait()]
            if (wake_at is not None and len(self._in_flight) < self.cfg.delivery_concurrency
                    and not self.circuit.probing):
                waiters.append(self.clock.sleep_until(max(wake_at, now)))
            # a dead letter retried by command from another process is seen within 5 s
            timeout = 5.0
            if self._unrecorded:
                timeout = min(timeout, max(0.0, self._record_retry_at - asyncio.get_running_loop().time()))
            await wait_first(waiters, timeout=timeout)

    async def start_due(self) -> list[asyncio.Task]:
        """Start attempts for every due document the concurrency limit and the
        circuit allow; returns the started tasks."""
        if not self.enabled or self._stopping:
            return []
        async with self._start_lock:  # one query at a time: a row read is never stale
            now = self.clock.now()
            free = self.cfg.delivery_concurrency - len(self._in_flight)
            if free <= 0:
                return []
            rows = await asyncio.to_thread(self.store.due_documents, now, free, self._busy())
            return self._launch(rows)

    def _launch(self, rows: list) -> list[asyncio.Task]:
        started = []
        for row in rows:
            if row["uid"] in self._in_flight or row["uid"] in self._unrecorded:
                continue
            if not self.circuit.allow(self.clock.now()):
                break
            task = asyncio.get_running_loop().create_task(self._attempt(dict(row)))
            self._in_flight[row["uid"]] = task
            started.append(task)
        return started

    async def run_due(self) -> int:
        """Deliver everything due now and wait for those attempts, including any the
        background loop already started (the virtual-time tick). Returns how many
        attempts it waited for."""
        seen: set[asyncio.Task] = set()
        while True:
            await self.start_due()
            running = [t for t in self._in_flight.values() if t not in seen]
            if not running:
                return len(seen)
            seen.update(running)
            await asyncio.wait(running)

    # ------------------------------------------------------------------ one attempt

    async def _token(self, dev_eui: str) -> tuple[str, bool]:
        """(token, whether it came from the login flow)."""
        tok = await asyncio.to_thread(self.store.device_token, dev_eui)
        if tok:
            return tok, False
        if self.cfg.webapp_username:
            return await self._login(force=False), True
        return self.cfg.webapp_token, False

    async def _login(self, force: bool) -> str:
        async with self._login_lock:
            if self._login_token and not force:
                return self._login_token
            assert self._session is not None
            url = self.cfg.webapp_url.rstrip("/") + self.cfg.login_path
            body = {"username": self.cfg.webapp_username, "password": self.cfg.webapp_password}
            try:
                async with self._session.post(url, json=body, allow_redirects=False) as resp:
                    if resp.status != 200:
                        raise LoginError(f"login answered {resp.status}")
                    data = await resp.json(content_type=None)
            except (aiohttp.ClientError, TimeoutError, ValueError) as e:
                raise LoginError(f"login failed: {type(e).__name__}: {e}") from None
            tok = data.get("token") if isinstance(data, dict) else None
            if not isinstance(tok, str) or not tok:
                raise LoginError("login answer carries no token")
            try:
                check_token(tok, "the token of the login answer")
            except RequestError as e:
                raise LoginError(str(e)) from None
            self._login_token = tok
            log.info("event=login_ok")
            return tok

    async def _post(self, row: dict, token: str) -> Attempt:
        assert self._session is not None
        url = self.cfg.webapp_url.rstrip("/") + self.cfg.upload_path
        headers = {
            "Content-Type": "application/xml; charset=utf-8",
            "Authorization": f"Token {token}",
            "Idempotency-Key": row["idempotency_key"],
        }
        check_request(url, headers)  # RequestError: the same every time, the caller dead-letters
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        secrets = self._secrets(token)
        try:
            async with self._session.post(url, data=row["xml"], headers=headers, allow_redirects=False) as resp:
                text = await kept_text(resp, secrets)
                retry_after = self._retry_after(resp.headers.get("Retry-After"), row["uid"])
                return Attempt(resp.status, None, text, retry_after, loop.time() - t0)
        except TimeoutError:
            return Attempt(None, f"timed out after {self.cfg.request_timeout:g} s", None, None, loop.time() - t0)
        except aiohttp.ClientError as e:
            return Attempt(None, redact(f"{type(e).__name__}: {e}", secrets)[:500], None, None, loop.time() - t0)

    def _secrets(self, token: str | None) -> list[str]:
        """What must never be stored from an answer or an error."""
        from urllib.parse import urlsplit
        try:
            url_password = urlsplit(self.cfg.webapp_url).password
        except ValueError:
            url_password = None
        return [s for s in (token, self.cfg.webapp_token, self.cfg.webapp_password, self._login_token, url_password)
                if s]

    def _retry_after(self, value: str | None, uid: str) -> float | None:
        """The Web App's ``Retry-After``, cut to ``max_retry_after``: a year (or a date
        in 2100) must not stop delivery until a restart."""
        ra = parse_retry_after(value, self.clock.wall())
        if ra is not None and ra > self.cfg.max_retry_after:
            log.warning("event=retry_after_capped uid=%s asked=%r used=%g", uid, (value or "")[:64],
                        self.cfg.max_retry_after)
            ra = self.cfg.max_retry_after
        return ra

    async def _attempt(self, row: dict) -> None:
        uid = row["uid"]
        try:
            unbuildable = None
            async with self._sem:
                try:
                    token, from_login = await self._token(row["dev_eui"])
                    att = await self._post(row, token)
                    if att.status == 401 and from_login:
                        # the login token may have expired: log in again, once
                        token = await self._login(force=True)
                        att = await self._post(row, token)
                except LoginError as e:
                    att = Attempt(None, str(e))
                except Exception as e:  # noqa: BLE001 - RequestError, or anything else that stops the request
                    # being built: the same next time, so trying again would never end
                    if not isinstance(e, RequestError):
                        log.exception("event=request_not_built uid=%s", uid)
                    unbuildable = str(e) or type(e).__name__
                    att = Attempt(None, f"the request cannot be built: {unbuildable}"[:500])
            now = self.clock.now()
            r = decide(uid, att, row["attempts"], row["created"], now, self.cfg.max_age, self.backoff)
            if unbuildable is not None:
                r.result, r.next_attempt = "dead", None
                r.dead_reason = f"the request cannot be built: {unbuildable}"[:500]
                self.circuit.neutral()
            elif classify(att.status) == "delivered":
                self.circuit.success()
            elif classify(att.status) == "retry":
                self.circuit.failure(now)
                if att.retry_after is not None and att.status in (429, 503):
                    self.circuit.hold(now + att.retry_after)
            else:
                self.circuit.neutral()
            try:
                await self.committer.submit(op_attempt(r))
            except StoreUnavailable as e:
                # not sent again until the outcome is written (record_pending backs off)
                self._unrecorded[uid] = r
                self._record_retry_at = max(self._record_retry_at,
                                            asyncio.get_running_loop().time() + RECORD_RETRY_FIRST)
                log.error("event=attempt_not_recorded uid=%s result=%s error=%r", uid, r.result, str(e))
            if self.metrics:
                self.metrics.delivery_attempt(r.result, att.status, att.duration)
            # a dead letter is data the Web App does not get: an error, and counted by
            # cause (what alerts fire on); a retry is routine
            cause = None
            if r.result == "dead":
                cause = "rejected" if classify(att.status) == "dead" else "max_age"
                if self.metrics:
                    self.metrics.data_loss.labels("dead_letter", cause).inc()
            log.log(logging.ERROR if cause else logging.INFO,
                    "event=%s uid=%s key=%s result=%s status=%s error=%r attempt=%d next=%s%s",
                    "dead_letter" if cause else "delivery", uid, row["idempotency_key"], r.result, att.status,
                    att.error, row["attempts"] + 1, f"{r.next_attempt:.3f}" if r.next_attempt else "-",
                    f" cause={cause} reason={r.dead_reason!r}" if cause else "")
        finally:
            self._in_flight.pop(uid, None)
            self._wake.set()
