"""A TCP relay that delays every byte by a fixed one-way latency, in its own process.

Loopback has no network round trip, which hides the cost a client pays per request
against a server on another machine. This relay stands between a client and a server
on loopback and holds each chunk it reads for ``--rtt-ms / 2`` milliseconds in each
direction (order kept, nothing else changed: no HTTP parsing, no rewriting), so a
request/answer pair costs one round trip more, as on a network. asyncio's timers wait
whole milliseconds (epoll), so a round trip comes out a little longer than asked:
``--rtt-ms 2`` measured 2.4 ms here (GET /health: 0.7 ms direct, 3.1 ms relayed).

    python bench/delay_relay.py --upstream 127.0.0.1:5000 --rtt-ms 2

The port it listens on is printed on the first line of stdout (``listening PORT``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib

_READ = 256 * 1024


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    """Copy reader to writer, each chunk ``delay`` seconds after it was read."""
    loop = asyncio.get_running_loop()
    due: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def deliver() -> None:
        while True:
            at, data = await due.get()
            if not data:
                break
            wait = at - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()
        with contextlib.suppress(OSError):
            writer.write_eof()

    delivering = asyncio.create_task(deliver())
    try:
        while data := await reader.read(_READ):
            due.put_nowait((loop.time() + delay, data))
    except OSError:
        pass
    due.put_nowait((0.0, b""))
    with contextlib.suppress(OSError):
        await delivering


async def _serve(upstream: tuple[str, int], delay: float) -> None:
    async def relay(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection(*upstream)
        except OSError:
            client_w.close()
            return
        await asyncio.gather(_pump(client_r, server_w, delay), _pump(server_r, client_w, delay))
        for w in (client_w, server_w):
            w.close()

    server = await asyncio.start_server(relay, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    print(f"listening {port}", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upstream", required=True, help="host:port of the real server")
    parser.add_argument("--rtt-ms", type=float, required=True, help="round trip to add")
    args = parser.parse_args()
    host, _, port = args.upstream.rpartition(":")
    asyncio.run(_serve((host, int(port)), args.rtt_ms / 2000))


if __name__ == "__main__":
    main()
