"""The air between emulator processes: point-to-point frames (``radio tx`` on one
emulated RN2483, ``radio rx`` on another) cross from one ``hil emulate`` process to
the next, as between two modules on one bench.

Each attached emulator binds a Unix datagram socket in a shared directory; a frame
is one datagram (the spreading factor, then the payload) sent to every other socket
there. A socket file left by a process that died is removed when a send finds
nobody behind it.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import socket
import tempfile
import threading
from pathlib import Path

from hil.emulator.core import ModuleModel
from hil.emulator.pty import Air, PtyEmulator

log = logging.getLogger("hil.emulator.air")

_ids = itertools.count()


def default_directory() -> str:
    """The air every ``hil emulate`` of this user shares unless told otherwise."""
    return str(Path(tempfile.gettempdir()) / f"hil-air-{os.getuid()}")


class SocketAir(Air):
    """:class:`hil.emulator.core.Air` across processes."""

    def __init__(self, directory: str | os.PathLike[str]):
        super().__init__()
        self.directory = Path(directory)
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._sockets: dict[int, tuple[PtyEmulator, socket.socket, Path, threading.Thread]] = {}

    def attach(self, emu: PtyEmulator) -> None:
        path = self.directory / f"{os.getpid()}-{next(_ids)}.sock"
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(str(path))
        sock.settimeout(0.2)
        t = threading.Thread(target=self._receive, args=(emu, sock), name=f"air {path.name}", daemon=True)
        with self._lock:
            self._sockets[id(emu.model)] = (emu, sock, path, t)
        t.start()
        log.debug("event=air_attached path=%s", path)

    def detach(self, emu: PtyEmulator) -> None:
        with self._lock:
            member = self._sockets.pop(id(emu.model), None)
        if member is None:
            return
        _emu, sock, path, t = member
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        sock.close()
        t.join(timeout=2)

    def _receive(self, emu: PtyEmulator, sock: socket.socket) -> None:
        while True:
            try:
                data = sock.recv(1024)
            except TimeoutError:
                continue
            except OSError:  # closed by detach
                return
            if len(data) < 2:
                continue
            sf, payload = data[0], data[1:]
            emu.post(lambda now, m=emu.model, sf=sf, p=payload: m.on_air(sf, p, now))

    def broadcast(self, sender: ModuleModel, sf: int, payload: bytes) -> None:
        with self._lock:
            own = self._sockets.get(id(sender))
        own_path = own[2] if own else None
        data = bytes([sf]) + payload
        out = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            for path in sorted(self.directory.glob("*.sock")):
                if path == own_path:
                    continue
                try:
                    out.sendto(data, str(path))
                except (ConnectionRefusedError, FileNotFoundError):
                    log.info("event=air_stale_removed path=%s", path)
                    with contextlib.suppress(FileNotFoundError):
                        path.unlink()
                except OSError as e:
                    log.warning("event=air_send_failed path=%s error=%r", path, str(e))
        finally:
            out.close()
