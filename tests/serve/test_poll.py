"""Busy polling: the event loop keeps polling for its window after each request, then sleeps again."""

from __future__ import annotations

import asyncio
import time

import pytest
import uvloop

from prodml.serve.poll import BusyPoll


@pytest.mark.parametrize("new_loop", [uvloop.new_event_loop, asyncio.new_event_loop])
def test_the_loop_polls_through_its_window_then_sleeps(new_loop) -> None:  # type: ignore[no-untyped-def]
    async def scenario() -> tuple[int, bool, int, bool, float]:
        poll = BusyPoll(asyncio.get_running_loop(), 0.05)
        poll.arm()
        armed = poll.polling
        await asyncio.sleep(0.03)  # inside the window: the loop goes round instead of sleeping 30 ms
        inside = poll.passes
        await asyncio.sleep(0.05)  # past it
        after = poll.passes
        cpu = time.thread_time()
        await asyncio.sleep(0.2)  # idle: this thread sleeps, no pass at all
        return inside, armed, poll.passes - after, poll.polling, time.thread_time() - cpu

    loop = new_loop()
    try:
        inside, armed, passes_idle, polling, cpu = loop.run_until_complete(scenario())
    finally:
        loop.close()
    assert armed
    assert inside > 1  # the loop went round (zero-timeout polls of the sockets) instead of sleeping
    assert (passes_idle, polling) == (0, False)
    assert cpu < 0.05  # 200 ms idle cost (next to) no CPU


def test_each_request_extends_the_window() -> None:
    async def scenario() -> tuple[bool, bool]:
        poll = BusyPoll(asyncio.get_running_loop(), 0.5)
        for _ in range(4):  # requests 20 ms apart: the 0.5 s window never closes between them
            poll.arm()
            await asyncio.sleep(0.02)
        still = poll.polling
        await asyncio.sleep(0.6)
        return still, poll.polling

    loop = uvloop.new_event_loop()
    try:
        assert loop.run_until_complete(scenario()) == (True, False)
    finally:
        loop.close()


def test_a_zero_window_never_polls() -> None:
    async def scenario() -> tuple[bool, int]:
        poll = BusyPoll(asyncio.get_running_loop(), 0.0)
        poll.arm()
        polling = poll.polling
        await asyncio.sleep(0.01)
        return polling, poll.passes

    loop = uvloop.new_event_loop()
    try:
        assert loop.run_until_complete(scenario()) == (False, 0)
    finally:
        loop.close()
