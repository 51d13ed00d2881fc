"""Assembling closed messages, in the service's process or in a worker process.

Assembling a closed message (decoding the record, building the lxml document,
serialising the outcome) costs a few hundred microseconds. The ingest path never
does it: it commits the fragment and the message's closed state and answers; the
aggregator assembles afterwards (:meth:`collector.service.loops.Closing.flush_closes`).
While closes are rare that happens in the service's process; when they come faster
than ``offload_rate`` per second, :class:`Assembler` hands them in batches to one
worker process (``python -m collector.service.aggregator``), so the event loop keeps its
CPU for answering uplinks.

The worker is a pure function over pipes: ``Message.to_dict()`` in,
:class:`~collector.service.store.ClosedMessage` out (pickled frames with a length prefix).
It holds no state; the service keeps the reassembler and the store. If the worker
fails, the batch is assembled in-process and the worker is started again later.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import pickle
import signal
import struct
import sys
import time
from typing import BinaryIO

from collector.core.assemble import assemble, reject_invalid
from collector.core.reassembly import Message
from collector.service.store import ClosedMessage, closed_message

log = logging.getLogger("collector.aggregator")

_LEN = struct.Struct("<Q")


def close_message(m: Message, d: dict | None = None) -> ClosedMessage:
    """Assemble a closed message into what the store records (:func:`~collector.service.store.op_closed`);
    ``d``: ``m.to_dict()`` when the caller has it (the worker is sent it), so the
    fragments are serialised once for the message and its outcome."""
    out = reject_invalid(assemble(m))
    if d is None:
        d = m.to_dict()
    return closed_message(d, out.to_dict(d["fragments"]), out.xml)


class Assembler:
    """Assembles closed messages: in-process while fewer than ``offload_rate``
    close per second, else in a worker process (started on demand)."""

    def __init__(self, offload_rate: float = 50.0, restart_after: float = 30.0):
        self.offload_rate = offload_rate
        self.restart_after = restart_after
        #: messages assembled by the worker / in-process
        self.offloaded = 0
        self.inline = 0
        self._proc: asyncio.subprocess.Process | None = None
        self._lock = asyncio.Lock()
        self._window = time.monotonic()
        self._window_count = 0
        self._no_worker_until = 0.0

    @property
    def worker_running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    def _wants_worker(self, n: int) -> bool:
        now = time.monotonic()
        if now - self._window >= 1.0:
            self._window, self._window_count = now, 0
        self._window_count += n
        return self._window_count >= self.offload_rate and now >= self._no_worker_until

    async def run(self, msgs: list[Message]) -> list[ClosedMessage]:
        """Each message's :class:`ClosedMessage`, in order."""
        if not msgs:
            return []
        async with self._lock:
            wanted = self._wants_worker(len(msgs))
            if self._proc is None and wanted:
                await self._start()
            if self._proc is not None:
                try:
                    results = await self._remote(msgs)
                except (OSError, EOFError, asyncio.IncompleteReadError, pickle.PickleError, ValueError) as e:
                    log.error("event=assembly_worker_failed error=%r; assembling in-process, worker restarts in %g s",
                              str(e) or type(e).__name__, self.restart_after)
                    await self._stop()
                    self._no_worker_until = time.monotonic() + self.restart_after
                except BaseException:
                    self._discard()  # interrupted mid-exchange (cancelled): the pipe is out of step
                    raise
                else:
                    out = [r if isinstance(r, ClosedMessage) else close_message(m)  # an error: raise it here
                           for r, m in zip(results, msgs, strict=True)]
                    self.offloaded += len(out)
                    return out
        self.inline += len(msgs)
        return [close_message(m) for m in msgs]

    async def _start(self) -> None:
        try:
            self._proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "collector.service.aggregator", stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE)
        except OSError as e:
            log.error("event=assembly_worker_failed error=%r", str(e))
            self._no_worker_until = time.monotonic() + self.restart_after
            return
        log.info("event=assembly_worker_started pid=%d", self._proc.pid)

    async def _remote(self, msgs: list[Message]) -> list:
        proc = self._proc
        assert proc is not None and proc.stdin is not None and proc.stdout is not None
        blob = pickle.dumps([m.to_dict() for m in msgs], protocol=pickle.HIGHEST_PROTOCOL)
        proc.stdin.write(_LEN.pack(len(blob)) + blob)
        await proc.stdin.drain()
        (n,) = _LEN.unpack(await proc.stdout.readexactly(_LEN.size))
        results = pickle.loads(await proc.stdout.readexactly(n))
        if not isinstance(results, list) or len(results) != len(msgs):
            raise ValueError("the worker answered out of step")
        return results

    def _discard(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()

    async def _stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.stdin is not None:
            proc.stdin.close()  # the worker exits at the end of its input
        try:
            await asyncio.wait_for(proc.wait(), 5.0)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()

    async def close(self) -> None:
        async with self._lock:
            await self._stop()


# --------------------------------------------------------------------------- the worker


def serve(inp: BinaryIO, out: BinaryIO) -> None:
    """The worker: read batches of ``Message.to_dict()``, answer their
    :class:`ClosedMessage` (or, for a message that fails, the error as text) until
    the input ends."""
    while True:
        head = inp.read(_LEN.size)
        if len(head) < _LEN.size:
            return
        (n,) = _LEN.unpack(head)
        batch = pickle.loads(inp.read(n))
        results: list[ClosedMessage | str] = []
        for d in batch:
            try:
                results.append(close_message(Message.from_dict(d), d))
            except Exception as e:  # noqa: BLE001 - the service assembles it again and reports it
                results.append(f"{type(e).__name__}: {e}")
        blob = pickle.dumps(results, protocol=pickle.HIGHEST_PROTOCOL)
        out.write(_LEN.pack(len(blob)) + blob)
        out.flush()


if __name__ == "__main__":
    # the service stops the worker by closing its input; a terminal's Ctrl-C or a
    # SIGTERM to the whole process group is the service's to handle
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    serve(sys.stdin.buffer, sys.stdout.buffer)
