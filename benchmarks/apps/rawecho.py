"""A bare HTTP/1.1 echo on uvloop and httptools (uvicorn's loop and parser) with no ASGI layer: reads each
request's body, answers a constant JSON, keeps the connection alive. The floor of a Python HTTP server.

python -m benchmarks.apps.rawecho --port 9002 [--busy-poll-us 200] [--work-us 0]

``--busy-poll-us``: keep the loop polling that long after each request, as ``prodml serve`` does
(``prodml.serve.poll``); 0 (the default) sleeps in ``epoll_wait`` at once, as servers usually do.

``--work-us``: spin that long on the loop before each answer: a server that does nothing but spend a given
CPU time per request, to tell what latency queueing alone gives at that cost and rate (set it to another
server's CPU per request, less the echo's own).
"""

import argparse
import asyncio
import time

import httptools
import uvloop

from prodml.serve.poll import BusyPoll

RESPONSE = (
    b'HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 18\r\n\r\n{"predictions":[]}'
)


class Echo(asyncio.Protocol):
    def __init__(self, poll: BusyPoll, work_s: float = 0.0) -> None:
        self.poll = poll
        self.work_s = work_s

    def connection_made(self, transport):  # type: ignore[no-untyped-def]
        self.transport = transport
        self.parser = httptools.HttpRequestParser(self)
        self.body: list[bytes] = []

    def data_received(self, data: bytes) -> None:
        self.poll.arm()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.close()

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.body = []
        if self.work_s:
            until = time.perf_counter() + self.work_s
            while time.perf_counter() < until:
                pass
        self.transport.write(RESPONSE)
        self.poll.arm()


async def main(port: int, busy_poll_us: int, work_us: int) -> None:
    loop = asyncio.get_running_loop()
    poll = BusyPoll(loop, busy_poll_us / 1e6)
    server = await loop.create_server(lambda: Echo(poll, work_us / 1e6), "127.0.0.1", port, backlog=2048)
    await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--busy-poll-us", type=int, default=0)
    parser.add_argument("--work-us", type=int, default=0)
    args = parser.parse_args()
    uvloop.run(main(args.port, args.busy_poll_us, args.work_us))
