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
from typing import TYPE_CHECKING, Any

from collector.core.reassembly import Message, Reassembler

if TYPE_CHECKING:
    from collector.service.app import CollectorService

log = logging.getLogger("collector.consistency")

#: seconds between attempts to reload the state while the store cannot be read
RELOAD_RETRY = 1.0


class StateGuard:
    def __init__(self, service: CollectorService):
        self.svc = service
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
        svc = self.svc
        committer = svc.committer
        if committer is None or committer._closing:
            return "the collector is shutting down"
        if self.resyncing:
            return "a write failed; the collector is reloading its state from the store"
        damage = svc.store_watch.current() if svc.store_watch is not None else None
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
        if (fut.cancelled() or fut.exception() is not None) and not self.svc._stopping:
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
        svc = self.svc
        while True:
            try:
                await self._reload_once()
                return
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - keep refusing until the store can be read
                log.error("event=state_reload_failed error=%r", str(e))
                if svc._stopping:
                    return
                await asyncio.sleep(RELOAD_RETRY)

    async def _reload_once(self) -> None:
        svc = self.svc
        async with svc._close_lock, svc._expire_lock:
            # every commit that may have changed the state has finished (no new
            # uplink is taken meanwhile: refusal() says so)
            while self._inflight:
                await asyncio.wait(list(self._inflight))
            assert svc.store is not None
            now = svc.clock.now()
            msgs, next_seq = await asyncio.to_thread(svc.store.restore_state, now, svc.cfg.duplicate_window)
            fresh = Reassembler(svc.reasm.settings)
            fresh.load(msgs, max(next_seq, svc.reasm.next_seq))
            dropped = _difference(svc.reasm, fresh)
            svc.reasm = fresh
            svc._pending_close = [Message.from_dict(d) for d in msgs if d.get("pending_close")]
            svc._retry_ops = []
            self.resyncs += 1
        log.warning("event=state_reloaded open_messages=%d dropped_fragments=%d", fresh.open_count(), dropped)
        svc._agg_wake.set()


def _difference(old: Reassembler, new: Reassembler) -> Any:
    """Fragments held in memory that the store did not have (for the log)."""
    held = {(m.uid, i) for m in new.open_messages() for i in m.fragments}
    return sum(1 for m in old.open_messages() for i in m.fragments if (m.uid, i) not in held)
