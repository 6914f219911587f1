#!/usr/bin/env python3
"""A minimal terminado server for tether-bench.

Usage: python3 terminado_server.py PORT

Serves terminado's TermSocket at ws://127.0.0.1:PORT/websocket with a
UniqueTermManager: every WebSocket connection gets its own `bash` in a new
PTY, killed (SIGHUP) when the connection closes. Prints "ready" on stdout
once it listens. On SIGTERM or SIGINT it kills every terminal and exits, so
no bash is left behind.
"""

import asyncio
import signal
import sys

import tornado.web
from terminado import TermSocket, UniqueTermManager


async def main(port: int) -> None:
    manager = UniqueTermManager(shell_command=["bash"])
    app = tornado.web.Application(
        [(r"/websocket", TermSocket, {"term_manager": manager})],
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
    await manager.shutdown()


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: terminado_server.py PORT")
    asyncio.run(main(int(sys.argv[1])))
