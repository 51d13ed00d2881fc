"""Crash safety: SIGKILL the collector ten times under steady load (in one process,
and the owner of the state with 2 HTTP workers), restart it on the same database each time, and check that nothing acknowledged is lost, nothing
reaches the Web App twice, and no open message loses its deadline."""

from __future__ import annotations

import pytest


@pytest.mark.slow
@pytest.mark.parametrize("workers", [0, 2], ids=["one-process", "2-http-workers"])
def test_ten_sigkills_under_load_lose_nothing_acknowledged(tmp_path, workloads, workers):
    # virtual time: no deadline passes during the load, however long a restart takes on
    # a loaded machine; the messages that lost a fragment close at their deadlines at the end
    f = workloads.crash_run(tmp_path, kills=10, seed=7, gap=(0.5, 1.2), message_timeout=600.0, workers=workers,
                            virtual_time=True)
    assert f["kills"] == 10
    assert f["unexpected_answers"] == []
    assert f["uplinks_acknowledged"] > 200, f  # the load was real
    assert f["refused_while_down"] > 0, f  # and the kills hit it
    assert f["lost"] == 0, f["lost_examples"]
    assert f["open_messages_left"] == 0
    assert f["messages_closed"] == f["messages_sent"], f
    assert f["duplicate_documents_in_collector"] == 0
    assert f["duplicates_at_webapp"] == 0
    assert f["documents_not_delivered"] == 0
    assert f["keys_missing_at_webapp"] == 0 and f["keys_unexpected"] == 0
    assert f["whole_messages_missing_at_webapp"] == 0
    assert f["deadline_violations"] == 0, f["deadline_examples"]
    assert f["closed_by"]["deadline"] == f["messages_with_a_lost_fragment"]
