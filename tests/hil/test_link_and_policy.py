"""The serial shell on a bare pseudo-terminal, and the pure recovery policy."""

from __future__ import annotations

import os
import pty
import threading
import tty

import pytest

from hil.drivers.modem import (
    Counters,
    ModemError,
    ModemTimeout,
    Outcome,
    RecoveryPolicy,
    SerialLink,
    Step,
    next_step,
    open_port,
)
from hil.drivers.rn2483 import is_unsolicited


@pytest.fixture
def pty_link():
    master, slave = pty.openpty()
    tty.setraw(slave)
    link = SerialLink(open_port(os.ttyname(slave), 57600), is_unsolicited=is_unsolicited)
    yield link, master
    link.close()
    os.close(master)
    os.close(slave)


def test_exact_matching_skips_mac_tx_ok_when_waiting_for_ok(pty_link):
    link, master = pty_link
    os.write(master, b"mac_tx_ok\r\nok\r\n")
    assert link.wait({"ok"}, 2.0, "test") == "ok"
    assert list(link.ignored) == ["mac_tx_ok"]


def test_partial_line_is_buffered_until_its_end(pty_link):
    link, master = pty_link
    os.write(master, b"mac_t")
    with pytest.raises(ModemTimeout):
        link.wait({"mac_tx_ok"}, 0.1, "first half")
    os.write(master, b"x_ok\r\n")
    assert link.wait({"mac_tx_ok"}, 2.0, "second half") == "mac_tx_ok"


def test_flush_keeps_downlinks_and_drops_stale_replies(pty_link, until):
    link, master = pty_link
    os.write(master, b"ok\r\nmac_rx 4 0A0B\r\nradio_rx  CAFE\r\nhalf a li")
    until(lambda: link.port.in_waiting >= 35, 2, "bytes on the line")
    link.flush()
    assert list(link.unsolicited) == ["mac_rx 4 0A0B", "radio_rx  CAFE"]
    assert list(link.ignored) == ["ok"]
    got = []

    def module():  # answers only once the command arrived, as a module does
        got.append(os.read(master, 100))
        os.write(master, b"invalid_param\r\n")

    t = threading.Thread(target=module)
    t.start()
    # the stale "ok" and the partial line cannot answer the next command
    assert link.command("mac set dr 9", {"ok", "invalid_param"}, 2.0) == "invalid_param"
    t.join(2)
    assert got == [b"mac set dr 9\r\n"]


def test_no_reply_is_a_timeout_naming_the_command(pty_link):
    link, _master = pty_link
    with pytest.raises(ModemTimeout, match="'sys get ver' within 0.1 s"):
        link.command("sys get ver", {"x"}, 0.1)


def test_opening_a_missing_port_is_a_clear_error(tmp_path):
    with pytest.raises(ModemError, match="cannot open serial port"):
        open_port(str(tmp_path / "ttyUSB9"), 57600)


def test_device_paths_are_opened_exclusively():
    master, slave = pty.openpty()
    path = os.ttyname(slave)
    first = open_port(path, 57600)
    try:
        with pytest.raises(ModemError, match="cannot open"):
            open_port(path, 57600)
    finally:
        first.close()
        os.close(master)
        os.close(slave)


# --------------------------------------------------------------------------- policy

P = RecoveryPolicy(busy_retries=3, first_delay_s=1.0, factor=2.0, max_delay_s=3.0, max_resets=1, max_rejoins=1)


def test_backoff_grows_and_is_capped():
    assert [P.delay(i) for i in range(4)] == [1.0, 2.0, 3.0, 3.0]
    assert P.worst_case_wait() == 6.0


def test_busy_retries_then_fails():
    c = Counters()
    steps = []
    for _ in range(4):
        d = next_step(Outcome.BUSY, c, P)
        steps.append((d.step, d.delay_s))
        c.busy += 1
    assert steps == [(Step.WAIT_RETRY, 1.0), (Step.WAIT_RETRY, 2.0), (Step.WAIT_RETRY, 3.0), (Step.FAIL, 0.0)]


@pytest.mark.parametrize("outcome", [Outcome.NO_SECOND_REPLY, Outcome.NO_FIRST_REPLY, Outcome.REBOOTED])
def test_hang_resets_once_then_fails(outcome):
    assert next_step(outcome, Counters(), P).step is Step.RESET_REJOIN
    d = next_step(outcome, Counters(resets=1), P)
    assert d.step is Step.FAIL and "reset" in d.reason


@pytest.mark.parametrize("outcome", [Outcome.NOT_JOINED, Outcome.REJOIN_NEEDED])
def test_join_problems_rejoin_once(outcome):
    assert next_step(outcome, Counters(), P).step is Step.REJOIN
    assert next_step(outcome, Counters(rejoins=1), P).step is Step.FAIL


def test_other_outcomes():
    assert next_step(Outcome.SENT, Counters(), P).step is Step.DONE
    assert next_step(Outcome.TOO_LONG, Counters(), P).step is Step.REFRAGMENT
    assert next_step(Outcome.REJECTED, Counters(), P).step is Step.FAIL
    assert next_step(Outcome.NACK, Counters(), P).step is Step.FAIL


def test_default_policy_outlasts_the_longest_eu868_off_time():
    from collector.core import lorawan

    air = lorawan.region("EU868").dr(0).time_on_air(51)
    assert RecoveryPolicy().worst_case_wait() > lorawan.off_time(air, 0.01)
