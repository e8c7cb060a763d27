#!/usr/bin/env python3
"""A webhook receiver for the lifecycle bench with webhooks on: answers every POST 204 at
once (keep-alive, no verification: the system tests verify) and counts them. The first line
on stdout is {"port": N}; on SIGTERM the last is {"received": N}.

Usage: python3 bench/webhook_sink.py [PORT]
"""

import asyncio
import json
import signal
import sys

received = 0


async def handle(reader, writer):
    global received
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            if length:
                await reader.readexactly(length)
            received += 1
            writer.write(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", int(sys.argv[1]) if len(sys.argv) > 1 else 0)
    print(json.dumps({"port": server.sockets[0].getsockname()[1]}), flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with server:
        await stop.wait()
    print(json.dumps({"received": received}), flush=True)


asyncio.run(main())
