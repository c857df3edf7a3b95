"""The stream bench's decision reader: it matches every report the load sent, the last
round too, and gives up on a lost one only after its grace time.

The decisions come from an in-memory feed with aiokafka's `getmany` call shape; the
real consumer is exercised by the bench's smoke run (tests/integration/test_stream_bench.py).
"""

from __future__ import annotations

import asyncio
import json
import time
from types import SimpleNamespace

from engine.bench.stream import collect_decisions


class Feed:
    """Decisions put here come out of the next `getmany`, which otherwise waits its timeout."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue = asyncio.Queue()

    def put(self, event_id: str) -> None:
        self.queue.put_nowait(SimpleNamespace(value=json.dumps({"event_id": event_id}).encode()))

    async def getmany(self, timeout_ms: int = 0) -> dict:
        try:
            first = await asyncio.wait_for(self.queue.get(), timeout_ms / 1000)
        except asyncio.TimeoutError:
            return {}
        recs = [first]
        while not self.queue.empty():
            recs.append(self.queue.get_nowait())
        return {"tp": recs}


def test_the_round_sent_as_the_load_ends_is_waited_for() -> None:
    async def run() -> tuple[list, dict]:
        feed, sent, over = Feed(), {}, asyncio.Event()
        reader = asyncio.create_task(collect_decisions(feed.getmany, sent, over, grace_s=5.0))
        sent["alloc-c0-1"] = time.perf_counter()
        feed.put("alloc-c0-1")
        feed.put("alloc-other-9")  # not a report of this load: ignored
        await asyncio.sleep(0.1)  # its decision came: nothing is owed now, and the load goes on
        sent["alloc-c0-2"] = time.perf_counter()  # the last round, on the load's last tick
        over.set()
        await asyncio.sleep(0.1)
        feed.put("alloc-c0-2")  # its decision comes after the load ended
        return await asyncio.wait_for(reader, 5.0), sent

    matched, owed = asyncio.run(run())
    assert owed == {}
    assert len(matched) == 2
    first, last = matched
    assert first[0] < last[0], "in the order the reports were sent"
    assert 0.09 <= last[1] < 1.0, "the last round's latency runs from its send to its decision"


def test_a_report_without_decision_stays_owed_after_the_grace_time() -> None:
    async def run() -> tuple[list, dict, float]:
        feed, sent, over = Feed(), {"alloc-c1-3": time.perf_counter()}, asyncio.Event()
        over.set()
        t0 = time.perf_counter()
        matched = await asyncio.wait_for(collect_decisions(feed.getmany, sent, over, grace_s=0.3), 5.0)
        return matched, sent, time.perf_counter() - t0

    matched, owed, took = asyncio.run(run())
    assert matched == [] and list(owed) == ["alloc-c1-3"]
    assert 0.3 <= took < 1.0
