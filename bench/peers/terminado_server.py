#!/usr/bin/env python3
"""A minimal terminado server for tether-bench.

Usage: python3 terminado_server.py PORT [COMMAND [ARG...]]

Serves terminado's TermSocket on 127.0.0.1:PORT at two paths, both running
COMMAND (default `bash`) in a new PTY:

- /websocket: a UniqueTermManager. Every WebSocket connection gets its own
  terminal, killed (SIGHUP) when the connection closes.
- /named/NAME: a NamedTermManager. The first connection to NAME creates the
  terminal; later connections join it (and get terminado's replay of its
  last 1000 reads); it outlives its connections.

Prints "ready" on stdout once it listens. On SIGTERM or SIGINT it kills
every terminal and exits, so no process is left behind.
"""

import asyncio
import signal
import sys

import tornado.web
from terminado import NamedTermManager, TermSocket, UniqueTermManager


async def main(port: int, command: list) -> None:
    unique = UniqueTermManager(shell_command=command)
    named = NamedTermManager(shell_command=command)
    app = tornado.web.Application(
        [
            (r"/websocket", TermSocket, {"term_manager": unique}),
            (r"/named/(\w+)", TermSocket, {"term_manager": named}),
        ],
        # Large enough that a terminal's output never hits a message limit.
        websocket_max_message_size=64 << 20,
    )
    server = app.listen(port, address="127.0.0.1")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print("ready", flush=True)
    await stop.wait()
    server.stop()
    await unique.shutdown()
    await named.shutdown()


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: terminado_server.py PORT [COMMAND [ARG...]]")
    asyncio.run(main(int(sys.argv[1]), sys.argv[2:] or ["bash"]))
