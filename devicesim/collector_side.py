"""The collector's side of the repair loop, in-process, for fast closed-loop studies.

It runs the collector's own sans-IO decisions (:mod:`collector.core.repair`) the way
the service's repair hub applies them to every accepted FPort-17 uplink: a device's
next uplink after a hand-over means the downlink went out (``delivered``); a poll is
answered ACK or NEED; a message holding k distinct fragments is rebuilt and ACKed at
once; every command still due goes into the device's one pending downlink, which
replaces the one before and is handed to the network server. Nothing here is a
second implementation of those rules: only the plumbing the service does with its
store and HTTP clients is done in memory.
"""

from __future__ import annotations

from collector.core.repair import DeviceRepair, Policy, downlink_limit
from collector.core.wire2 import POLL, decode_downlink, encode_downlink


class CoreCollector:
    """Per device :class:`DeviceRepair` state; ``adaptive`` says which devices the
    collector steers with REDUNDANCY (the others keep their configured parity)."""

    def __init__(self, adaptive: frozenset[str] | set[str] = frozenset(), policy: Policy | None = None):
        base = policy or Policy()
        self.adaptive = frozenset(adaptive)
        self._policies = {True: _with(base, adaptive=True), False: _with(base, adaptive=False)}
        self.devices: dict[str, DeviceRepair] = {}
        self.pending: dict[str, bytes] = {}
        self.sent: set[str] = set()

    def policy(self, dev_eui: str) -> Policy:
        return self._policies[dev_eui in self.adaptive]

    def uplink(self, dev_eui: str, payload: bytes, region: str | None, data_rate: str | None,
               now: float) -> tuple[bytes | None, bool]:
        """An FPort-17 uplink the application received at ``now``. Returns the new
        downlink to hand to the network server (None: nothing new) and whether this
        uplink rebuilt its message."""
        if len(payload) < 4:
            return None, False
        policy = self.policy(dev_eui)
        dev = self.devices.get(dev_eui)
        if dev is None:
            dev = self.devices[dev_eui] = DeviceRepair(dev_eui)
        if dev_eui in self.sent:  # this uplink's receive windows carried the last downlink
            self.sent.discard(dev_eui)
            self.pending.pop(dev_eui, None)
            dev.delivered()
        msg_id, index, k = payload[0], payload[1], payload[2]
        rebuilt = False
        if index == POLL:
            dev.poll(msg_id, k, payload[3], policy, None)
        else:
            seen = dev.messages.get(msg_id)
            before = seen.held if seen is not None and seen.k == k else 0
            dev.fragment(msg_id, index, k, policy)
            if before < k <= dev.messages[msg_id].held:
                rebuilt = True
                dev.rebuilt(msg_id, policy)
        dev.after_uplink(policy)  # a NEED evidently lost on the air is due again
        downlink = None
        if dev.has_due:
            cmds = dev.commands(downlink_limit(region, data_rate), policy.keep)
            out = encode_downlink(cmds)
            if cmds and out != self.pending.get(dev_eui):
                self.pending[dev_eui] = downlink = out
        return downlink, rebuilt

    def handed_over(self, dev_eui: str, payload: bytes) -> None:
        """The network server took ``payload`` for ``dev_eui`` (queued for its next windows)."""
        dev = self.devices.get(dev_eui)
        if dev is not None and self.pending.get(dev_eui) == payload:
            dev.handed_over(decode_downlink(payload))
            self.sent.add(dev_eui)


def _with(p: Policy, **changes) -> Policy:
    from dataclasses import replace

    return replace(p, **changes)
