"""A real Mosquitto broker for tests and benchmarks: its own instance on a free port
of 127.0.0.1 with a config file in a temporary folder, never the system's broker.

:class:`Broker` starts it (persistence on, so a restart keeps the sessions and the
queued messages), restarts it on the same port, and stops it. :func:`publisher`
returns a connected paho client for publishing network-server messages.
"""

from __future__ import annotations

import contextlib
import getpass
import shutil
import socket
import subprocess
import time
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from collector.testing.harness import free_port, wait_until


def mosquitto_binary() -> str | None:
    return shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if Path(p).exists()), None)


class Broker:
    """A Mosquitto on 127.0.0.1, configured for a collector's persistent session."""

    def __init__(self, folder: str | Path, port: int | None = None, *, users: dict[str, str] | None = None,
                 tls: bool = False):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.users = users or {}
        #: with ``tls``: the self-signed certificate of 127.0.0.1 the broker presents (a client's CA file)
        self.cert: Path | None = self.folder / "broker.crt" if tls else None
        self.proc: subprocess.Popen | None = None
        self.log = self.folder / "mosquitto.log"

    def _config(self) -> Path:
        lines = [
            f"listener {self.port} 127.0.0.1",
            # started as root, Mosquitto would switch to its own user, which cannot read this folder
            f"user {getpass.getuser()}",
            "persistence true",
            f"persistence_location {self.folder}/",
            "autosave_interval 1",
            # a collector's session queues every uplink while it is away (the default is 1000)
            "max_queued_messages 0",
            "max_inflight_messages 0",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
        ]
        if self.cert is not None:
            key = self.folder / "broker.key"
            if not self.cert.exists():
                subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                                "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                                "-keyout", str(key), "-out", str(self.cert)], check=True, capture_output=True)
            lines += [f"certfile {self.cert}", f"keyfile {key}"]
        if self.users:
            pw = self.folder / "passwd"
            pw.write_text("".join(f"{u}:{p}\n" for u, p in self.users.items()))
            subprocess.run(["mosquitto_passwd", "-U", str(pw)], check=True, capture_output=True)
            pw.chmod(0o600)
            lines += ["allow_anonymous false", f"password_file {pw}"]
        else:
            lines.append("allow_anonymous true")
        conf = self.folder / "mosquitto.conf"
        conf.write_text("\n".join(lines) + "\n")
        return conf

    def start(self) -> Broker:
        binary = mosquitto_binary()
        if binary is None:
            raise RuntimeError("mosquitto is not installed (apt-get install mosquitto)")
        conf = self._config()
        self.proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL,
                                     stderr=self.log.open("ab"))
        wait_until(self._listening, 10, "mosquitto to listen")
        return self

    def _listening(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"mosquitto exited with {self.proc.returncode}: {self.log.read_text()[-500:]}")
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    def stop(self) -> None:
        """SIGTERM: Mosquitto saves its sessions and queues before it exits."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def url(self, user: str | None = None) -> str:
        auth = f"{user}:{self.users[user]}@" if user else ""
        return f"{'mqtts' if self.cert else 'mqtt'}://{auth}127.0.0.1:{self.port}"

    def __enter__(self) -> Broker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def publisher(port: int, client_id: str = "network-server", username: str | None = None,
              password: str | None = None, ca_file: str | Path | None = None) -> paho.Client:
    """A connected MQTT 5 client with its network thread running (stop it with
    :func:`close`); over TLS when given the broker's certificate."""
    c = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
    if username:
        c.username_pw_set(username, password)
    if ca_file:
        c.tls_set(ca_certs=str(ca_file))
    c.connect("127.0.0.1", port)
    c.loop_start()
    wait_until(c.is_connected, 10, "the publisher to connect")
    return c


def publish_all(c: paho.Client, messages: list[tuple[str, bytes]], qos: int = 1) -> None:
    """Publish and wait until the broker has taken every message (PUBACK for QoS 1)."""
    infos = [c.publish(topic, payload, qos=qos) for topic, payload in messages]
    deadline = time.monotonic() + 30
    for info in infos:
        info.wait_for_publish(max(0.1, deadline - time.monotonic()))


def close(c: paho.Client) -> None:
    with contextlib.suppress(Exception):
        c.disconnect()
    c.loop_stop()
