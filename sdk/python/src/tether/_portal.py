"""The sync API's engine: one private event loop on one thread, which the
blocking classes (:class:`~tether.Client` and everything it returns) hand
their coroutines to. Calls from any number of threads are safe: each is
one ``run_coroutine_threadsafe``. Closing cancels what still runs on the
loop, stops it and joins the thread, so nothing is left behind."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import AsyncIterator, Coroutine, Iterator
from typing import Any, Generic, Optional, TypeVar

T = TypeVar("T")


class Portal:
    """A thread running an asyncio loop; :meth:`call` runs a coroutine on it
    and blocks the calling thread until it is done."""

    def __init__(self, name: str = "tether-client") -> None:
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()
        self._ready.wait()
        self._closed = False

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.call_soon(self._ready.set)
        self._loop.run_forever()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The portal's event loop."""
        return self._loop

    def call(self, coro: Coroutine[Any, Any, T], timeout: Optional[float] = None) -> T:
        """Runs ``coro`` on the loop and returns its result (or raises its
        exception) in the calling thread. A KeyboardInterrupt while waiting
        cancels the coroutine."""
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("a blocking tether call from inside the client's own loop (a callback?)")
        if self._closed:
            coro.close()
            raise RuntimeError("the client is closed")
        fut = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return fut.result(timeout)
        except concurrent.futures.TimeoutError:
            fut.cancel()
            raise
        except BaseException:
            fut.cancel()
            raise

    def iterate(self, it: AsyncIterator[T]) -> Iterator[T]:
        """An async iterator, consumed from the calling thread."""
        while True:
            try:
                yield self.call(_anext(it))
            except StopAsyncIteration:
                return

    def close(self) -> None:
        """Cancels every task still on the loop, stops it and joins the
        thread. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(_cancel_all(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        self._loop.close()


async def _anext(it: AsyncIterator[T]) -> T:
    return await it.__anext__()


async def _cancel_all() -> None:
    me = asyncio.current_task()
    tasks = [t for t in asyncio.all_tasks() if t is not me]
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


class Twin(Generic[T]):
    """The base of the blocking twins (handles, shells, pipes, Popen): the
    portal, and the async object ``_a`` every call goes to."""

    def __init__(self, portal: Portal, inner: T) -> None:
        self._portal = portal
        self._a = inner

    def __repr__(self) -> str:
        return repr(self._a).replace("Async", "", 1)
