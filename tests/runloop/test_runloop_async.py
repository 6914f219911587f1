"""The async Runloop SDK (AsyncRunloopSDK) against a real daemon."""
import asyncio
import hashlib
import os

import pytest
from conftest import Collect, async_sdk_for

from runloop_api_client import AuthenticationError, NotFoundError


def run(coro, within=45):
    return asyncio.run(asyncio.wait_for(coro, within))


def test_async_exec_output_callbacks_and_exit_code(daemon):
    async def go():
        async with async_sdk_for(daemon) as s:
            devbox = s.devbox.from_id("local")
            r = await devbox.cmd.exec("echo out; echo err >&2; exit 4")
            assert (r.exit_code, await r.stdout(), await r.stderr()) == (4, "out\n", "err\n")
            out = Collect()
            r = await devbox.cmd.exec("for i in $(seq 1 100); do echo $i; done", stdout=out)
            assert out.text() == "".join("%d\n" % i for i in range(1, 101))

    run(go())


def test_async_background_kill_and_stdin(daemon):
    async def go():
        async with async_sdk_for(daemon) as s:
            devbox = s.devbox.from_id("local")
            ex = await devbox.cmd.exec_async("sleep 30")
            assert (await ex.get_state()).status == "running"
            await ex.kill()
            assert (await ex.result()).exit_code == 137
            ex = await devbox.cmd.exec_async("cat", attach_stdin=True)
            await ex.send_std_in("async\n")
            await ex.close_std_in()
            assert await (await ex.result()).stdout() == "async\n"

    run(go())


def test_async_files_and_errors(daemon, tmp_path):
    async def go():
        async with async_sdk_for(daemon) as s:
            devbox = s.devbox.from_id("local")
            p = str(tmp_path / "x" / "f.txt")
            await devbox.file.write(file_path=p, contents="async text\n")
            assert await devbox.file.read(file_path=p) == "async text\n"
            data = os.urandom(1 << 20)
            dest = str(tmp_path / "y.bin")
            await devbox.file.upload(path=dest, file=data)
            got = await devbox.file.download(path=dest)
            assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
            with pytest.raises(NotFoundError):
                await devbox.file.read(file_path=str(tmp_path / "nope"))
        async with async_sdk_for(daemon, token="wrong", max_retries=0) as bad:
            with pytest.raises(AuthenticationError):
                await bad.api.devboxes.retrieve("local")

    run(go())
