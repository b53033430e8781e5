"""The ingester's inbox, from the network thread to the writer: bounded by messages and by bytes, so a flood the
receive maximum does not cover (QoS 0) waits in the broker, not in the ingester's memory."""

from __future__ import annotations

import queue
import threading
import time

import pytest

from ingest.subscriber import Inbox


def test_past_its_bound_in_messages_a_put_waits_and_a_get_makes_room() -> None:
    inbox = Inbox(max_messages=2, max_bytes=1_000)
    assert inbox.put("a", 10, timeout=0) and inbox.put("b", 10, timeout=0)
    started = time.monotonic()
    assert not inbox.put("c", 10, timeout=0.2), "full: no room within the wait"
    assert time.monotonic() - started >= 0.19
    waiting = threading.Thread(target=lambda: inbox.put("c", 10, timeout=5))
    waiting.start()
    time.sleep(0.1)
    assert inbox.get(timeout=1) == "a"
    waiting.join(timeout=2)
    assert not waiting.is_alive()
    assert [inbox.get_nowait(), inbox.get_nowait()] == ["b", "c"]
    assert inbox.empty() and inbox.held_bytes() == 0
    with pytest.raises(queue.Empty):
        inbox.get(timeout=0.05)


def test_past_its_bound_in_bytes_a_put_waits_but_one_message_larger_than_the_bound_goes_in_alone() -> None:
    inbox = Inbox(max_messages=100, max_bytes=100)
    assert inbox.put("small", 60, timeout=0)
    assert not inbox.put("another", 60, timeout=0), "60 + 60 bytes is past the bound"
    assert inbox.get_nowait() == "small"
    assert inbox.put("huge", 10_000, timeout=0), "alone, a message larger than the bound is taken"
    assert not inbox.put("tiny", 1, timeout=0)
    assert inbox.qsize() == 1 and inbox.held_bytes() == 10_000
