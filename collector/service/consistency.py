"""Keeping the reassembler's state equal to what the store committed.

The ingest path feeds an uplink to the in-memory reassembler and then commits the
fragment with the new state of the messages it changed; the answer (202) waits for
the commit. Two things keep the reassembler from holding what was never stored:

- :meth:`StateGuard.refusal` is asked *before* the reassembler sees an uplink: while
  the commit queue is full (``max_pending_writes``), the service is stopping, a
  resynchronisation is under way or the database is damaged, the uplink is answered
  503 without changing any state - a resend is then taken as new, not as a
  duplicate of something that was never committed;
- a commit that fails after the reassembler took the uplink (disk full, I/O error)
  calls :meth:`StateGuard.commit_failed`. From then on every uplink is refused (503)
  until the commits already queued have finished and the reassembler has been
  rebuilt from the store (:meth:`Store.restore_state`, exactly what a restart would
  load). Messages closed in memory by an uncommitted uplink are dropped the same
  way: the store is the truth.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from collector.core.reassembly import Message
from collector.service.integrity import STORE_WATCH
from collector.service.keys import CLOCK, COMMITTER, REASM, STOPPING, STORE
from collector.service.loops import CLOSING

log = logging.getLogger("collector.consistency")

#: seconds between attempts to reload the state while the store cannot be read
RELOAD_RETRY = 1.0


class StateGuard:
    """Decides before the reassembler sees an uplink whether it may, and reloads the
    reassembler from the store after a commit failed. ``app`` is the service's
    application (its store, committer, reassembler and closing)."""

    def __init__(self, app: web.Application):
        self.app = app
        #: commits of uplinks the reassembler took, not finished yet
        self._inflight: set[asyncio.Future] = set()
        self._resync: asyncio.Task | None = None
        self.resyncs = 0

    @property
    def resyncing(self) -> bool:
        return self._resync is not None and not self._resync.done()

    def refusal(self) -> str | None:
        """Why an uplink cannot be taken now (None: it can), decided before the
        reassembler sees it."""
        app = self.app
        committer = app[COMMITTER]
        if committer._closing or app[STOPPING].is_set():
            return "the collector is shutting down"
        if self.resyncing:
            return "a write failed; the collector is reloading its state from the store"
        watch = app.get(STORE_WATCH)
        damage = watch.current() if watch is not None else None
        if damage:
            return damage
        if committer.depth >= committer.max_pending:
            return f"{committer.depth} writes already waiting for the store"
        return None

    def track(self, fut: asyncio.Future) -> None:
        """An uplink's commit the reassembler's state now depends on."""
        self._inflight.add(fut)
        fut.add_done_callback(self._settled)

    def _settled(self, fut: asyncio.Future) -> None:
        self._inflight.discard(fut)
        if (fut.cancelled() or fut.exception() is not None) and not self.app[STOPPING].is_set():
            self.commit_failed()

    def commit_failed(self) -> None:
        """A commit of an uplink the reassembler took failed: rebuild the state."""
        if self.resyncing:
            return
        log.error("event=state_reload reason=%r", "an uplink's commit failed after the reassembler took it")
        self._resync = asyncio.get_running_loop().create_task(self._reload(), name="state-reload")

    async def wait(self) -> None:
        """Until a reload under way has finished (tests, shutdown)."""
        if self._resync is not None:
            await asyncio.shield(self._resync)

    async def _reload(self) -> None:
        while True:
            try:
                await self._reload_once()
                return
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - keep refusing until the store can be read
                log.error("event=state_reload_failed error=%r", str(e))
                if self.app[STOPPING].is_set():
                    return
                await asyncio.sleep(RELOAD_RETRY)

    async def _reload_once(self) -> None:
        app = self.app
        closing, reasm = app[CLOSING], app[REASM]
        async with closing._close_lock, closing._expire_lock:
            # every commit that may have changed the state has finished (no new
            # uplink is taken meanwhile: refusal() says so)
            while self._inflight:
                await asyncio.wait(list(self._inflight))
            now = app[CLOCK].now()
            msgs, next_seq = await asyncio.to_thread(app[STORE].restore_state, now, reasm.settings.recall)
            before = {(m.uid, i) for m in reasm.open_messages() for i in m.fragments}
            reasm.reload(msgs, max(next_seq, reasm.next_seq))
            after = {(m.uid, i) for m in reasm.open_messages() for i in m.fragments}
            # messages closed in memory by an uncommitted uplink are dropped; the store
            # says which closed ones still wait for assembly
            closing.pending = [Message.from_dict(d) for d in msgs if d.get("pending_close")]
            closing._retry_ops = []
            self.resyncs += 1
        log.warning("event=state_reloaded open_messages=%d dropped_fragments=%d", reasm.open_count(),
                    len(before - after))
        closing.wake()
