"""Group commit: concurrent writes share one transaction (and one fsync).

Requests put their operations on a queue; one writer thread applies everything
queued in a single transaction, and each request's future resolves only after that
commit. Reads use their own connection (WAL lets them run beside the writer).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from collector.service.store.ops import Op, together
from collector.service.store.queries import Store

log = logging.getLogger("collector.store")


class StoreUnavailable(RuntimeError):
    """The store cannot take a write now (queue full, disk error); answer 503."""


class GroupCommitter:
    """Batches concurrent writes into one transaction on a dedicated thread.

    ``await submit(op)`` returns the op's result once the transaction holding it
    has committed, or raises :class:`StoreUnavailable`.
    """

    def __init__(self, store: Store, max_batch: int = 1000, max_pending: int = 20_000,
                 on_commit: Callable[[int, float], None] | None = None):
        self.store = store
        self.max_batch = max_batch
        self.max_pending = max_pending
        self.on_commit = on_commit
        self._queue: asyncio.Queue[tuple[Op, asyncio.Future]] = asyncio.Queue()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="collector-store")
        self._task: asyncio.Task | None = None
        self._closing = False
        self.failed_batches = 0

    @property
    def depth(self) -> int:
        return self._queue.qsize()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="group-commit")

    def submit_nowait(self, op: Op) -> asyncio.Future:
        if self._closing:
            raise StoreUnavailable("the store is shutting down")
        if self._queue.qsize() >= self.max_pending:
            raise StoreUnavailable(f"{self._queue.qsize()} writes already waiting for the store")
        fut = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((op, fut))
        return fut

    async def submit(self, op: Op) -> Any:
        return await self.submit_nowait(op)

    async def submit_many(self, ops: list[Op]) -> list[Any]:
        """Commit ``ops`` together (in one transaction)."""
        return await self.submit(together(ops))

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        stop = False
        while not stop:
            first = await self._queue.get()
            batch = [first]
            while len(batch) < self.max_batch:
                try:
                    batch.append(self._queue.get_nowait())
                except asyncio.QueueEmpty:
                    break
            if any(op is None for op, _ in batch):
                stop = True
                batch = [b for b in batch if b[0] is not None]
                if not batch:
                    break
            ops = [op for op, _ in batch]
            t0 = loop.time()
            try:
                results = await loop.run_in_executor(self._executor, self.store.apply, ops)
            except Exception as e:  # noqa: BLE001 - any store failure becomes 503, per request
                self.failed_batches += 1
                log.error("event=commit_failed ops=%d error=%r", len(ops), str(e))
                if len(batch) > 1:
                    # one bad op must not fail its neighbours: retry them one by one
                    for op, fut in batch:
                        try:
                            res = await loop.run_in_executor(self._executor, self.store.write, op)
                        except Exception as e1:  # noqa: BLE001
                            if not fut.done():
                                fut.set_exception(StoreUnavailable(f"the store could not commit: {e1}"))
                        else:
                            if not fut.done():
                                fut.set_result(res)
                else:
                    _op, fut = batch[0]
                    if not fut.done():
                        fut.set_exception(StoreUnavailable(f"the store could not commit: {e}"))
                continue
            if self.on_commit:
                self.on_commit(len(batch), loop.time() - t0)
            for (_, fut), res in zip(batch, results, strict=True):
                if not fut.done():
                    fut.set_result(res)

    async def close(self) -> None:
        """Commit everything already queued, then stop."""
        self._closing = True
        if self._task is not None and not self._task.done():
            self._queue.put_nowait((None, None))  # type: ignore[arg-type]
            await self._task
        self._executor.shutdown(wait=True)
