"""Closing messages: the aggregator and pruning loops of the service.

The ingest path (:mod:`collector.service.ingest_http`) records a message it closes
as closed and hands it to :class:`Closing`; the aggregator loop assembles it
(:class:`~collector.service.aggregator.Assembler`) and records its document or
incident, and closes the messages whose deadline passes on the injected clock. The
pruning loop deletes what is older than the retention.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from collector.core.reassembly import Message, Reassembler
from collector.service import outbox
from collector.service.aggregator import Assembler
from collector.service.clock import Clock, wait_first
from collector.service.config import ServiceConfig
from collector.service.delivery import DeliveryAgent
from collector.service.metrics import Metrics
from collector.service.store import GroupCommitter, Op, StoreUnavailable, op_closed, op_prune, together

log = logging.getLogger("collector.service")

#: clock seconds between sweeps of closed messages older than the duplicate window
SWEEP_INTERVAL = 10.0


class Closing:
    """Assembles closed messages and records their outcomes; runs the loops."""

    def __init__(self, cfg: ServiceConfig, clock: Clock, metrics: Metrics, reasm: Reassembler,
                 committer: GroupCommitter, assembler: Assembler, delivery: DeliveryAgent):
        self.cfg = cfg
        self.clock = clock
        self.metrics = metrics
        self.reasm = reasm
        self.committer = committer
        self.assembler = assembler
        self.delivery = delivery
        self._wake = asyncio.Event()
        #: the clock time the aggregator sleeps until (``None``: until woken)
        self.target: float | None = None
        #: clock time of the next sweep of closed messages past the duplicate window
        self._next_sweep = 0.0
        self._expire_lock = asyncio.Lock()
        self._retry_ops: list[Op] = []
        #: messages the ingest path closed, waiting to be assembled (by the aggregator)
        self.pending: list[Message] = []
        self._close_lock = asyncio.Lock()
        self._tasks: list[asyncio.Task] = []
        self._stopping = False

    def wake(self) -> None:
        """Wake the aggregator (a message closed, or an earlier deadline)."""
        self._wake.set()

    @property
    def busy(self) -> bool:
        """Closed messages are waiting to be (or being) assembled."""
        return bool(self.pending) or self._close_lock.locked()

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._aggregator(), name="aggregator"),
                       loop.create_task(self._pruner(), name="pruner")]

    async def stop(self) -> None:
        """Stop the loops (a failed one is logged, not raised)."""
        self._stopping = True
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            try:
                await t
            except asyncio.CancelledError:
                pass
            except Exception:  # noqa: BLE001 - a failed task must not stop the shutdown
                log.exception("event=task_failed task=%s", t.get_name())

    # ------------------------------------------------------------------ closing

    async def _close_ops(self, closed: list[Message], now: float) -> list[Op]:
        """Assemble closed messages (:class:`~collector.service.aggregator.Assembler`): their
        documents or incidents, as store writes."""
        ops: list[Op] = []
        for cm in await self.assembler.run(closed):
            ops.append(op_closed(cm, now))
            self.metrics.messages.labels(cm.state, cm.close_reason or "unknown").inc()
            if cm.state == "incident":
                self.metrics.incidents.labels(cm.code or "unknown").inc()
                self.metrics.data_loss.labels("incident", cm.code or "unknown").inc()
            elif cm.state == "partial":
                self.metrics.data_loss.labels("partial", cm.close_reason or "unknown").inc()
            # a record that will not reach the Web App whole is what alerts fire on
            log.log(logging.INFO if cm.state == "complete" else logging.WARNING,
                    "event=message_closed message=%s dev=%s msg_id=%d reason=%s outcome=%s fragments=%d/%s%s",
                    cm.uid, cm.dev_eui, cm.msg_id, cm.close_reason, cm.state, cm.fragments_received,
                    cm.fragments_expected, f" code={cm.code}" if cm.code else "")
        return ops

    def _after_close(self, closed: list[Message]) -> None:
        if self.delivery.enabled:
            self.delivery.wake()

    async def flush_closes(self) -> int:
        """Assemble the messages the ingest path closed and record their outcomes
        (committed before this returns); returns how many."""
        done = 0
        async with self._close_lock:
            while self.pending:
                batch, self.pending = self.pending, []
                try:
                    await self.committer.submit_many(await self._close_ops(batch, self.clock.now()))
                except StoreUnavailable as e:
                    # still recorded as closed in the store: the aggregator tries again
                    self.pending[:0] = batch
                    log.error("event=close_not_recorded count=%d error=%r", len(batch), str(e))
                    return done
                except BaseException:
                    self.pending[:0] = batch
                    raise
                done += len(batch)
                self._after_close(batch)
        return done

    async def expire_due(self) -> int:
        """Close the messages whose deadline has passed and record their outcomes
        (committed before this returns)."""
        async with self._expire_lock:
            now = self.clock.now()
            closed = self.reasm.expire(now)
            ops = self._retry_ops + await self._close_ops(closed, now)
            if not ops:
                return 0
            try:
                await self.committer.submit_many(ops)
            except StoreUnavailable as e:
                self._retry_ops = ops
                log.error("event=close_not_recorded count=%d error=%r", len(ops), str(e))
                return 0
            self._retry_ops = []
            if closed:
                self._after_close(closed)
            return len(closed)

    async def tick(self) -> dict:
        """Run what is due at the current clock time: close messages, deliver."""
        await self.flush_closes()
        closed = await self.expire_due()
        delivered = await self.delivery.run_due()
        return {"closed": closed, "attempts": delivered}

    async def prune(self) -> dict:
        try:
            before = self.clock.now() - self.cfg.retention
            n, downlinks = await self.committer.submit(together([op_prune(before), outbox.op_prune_log(before)]))
            n["downlinks"] = downlinks
        except StoreUnavailable:
            return {}
        if n and any(n.values()):
            log.info("event=pruned %s", " ".join(f"{k}={v}" for k, v in n.items()))
        return n

    # ------------------------------------------------------------------ loops

    async def _aggregator(self) -> None:
        while not self._stopping:
            self._wake.clear()
            try:
                await self.flush_closes()
                now = self.clock.now()
                due = self.reasm.next_deadline()
                # woken by an uplink: expire only when something is due (the sweep is O(closed))
                if self._retry_ops or (due is not None and due <= now) or now >= self._next_sweep:
                    self._next_sweep = now + SWEEP_INTERVAL
                    await self.expire_due()
            except Exception:  # noqa: BLE001 - the aggregator must keep running
                log.exception("event=aggregator_error")
            self.target = self.reasm.next_deadline()
            if self._retry_ops or self.pending:
                # the store failed: try again in a while (wall time)
                self.target = None
            waiters = [self._wake.wait()]
            if self.target is not None:
                waiters.append(self.clock.sleep_until(self.target))
            await wait_first(waiters, timeout=5.0 if self._retry_ops or self.pending else None)

    async def _pruner(self) -> None:
        while not self._stopping:
            await self.prune()
            await self.clock.sleep_until(self.clock.now() + self.cfg.prune_interval)


CLOSING = web.AppKey("closing", Closing)
