"""`Blocking`: the async API, called from a plain thread. Wraps an object of
the `tether` package: awaitables it returns are run on a portal's loop,
async iterators become iterators, async context managers context managers,
and the objects it returns are wrapped the same way. With it one test body
exercises `AsyncClient` and `Client` alike."""

import inspect


class Blocking:
    def __init__(self, target, portal):
        self._target = target
        self._portal = portal

    def _wrap(self, value):
        if inspect.isawaitable(value):
            return self._wrap(self._portal.call(_await(value)))
        if inspect.isasyncgen(value):
            return (self._wrap(v) for v in self._portal.iterate(value))
        if type(value).__module__.startswith("tether") and not isinstance(value, (BaseException, type)):
            if _is_plain_data(value):
                return value
            return Blocking(value, self._portal)
        return value

    def __getattr__(self, name):
        value = getattr(self._target, name)
        if callable(value):

            def call(*args, **kwargs):
                return self._wrap(value(*args, **kwargs))

            return call
        return self._wrap(value)

    def __iter__(self):
        for item in self._portal.iterate(self._target.__aiter__()):
            yield self._wrap(item)

    def __enter__(self):
        return self._wrap(self._target.__aenter__())

    def __exit__(self, *exc):
        return self._portal.call(self._target.__aexit__(*exc))

    def close(self):
        closer = getattr(self._target, "aclose", None) or self._target.close
        return self._wrap(closer())

    def __repr__(self):
        return f"Blocking({self._target!r})"


async def _await(aw):
    return await aw


def _is_plain_data(value):
    """Results and events (dataclasses) are returned as they are."""
    return hasattr(value, "__dataclass_fields__")
