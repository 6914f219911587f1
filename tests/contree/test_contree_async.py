"""The async SDK (Contree): runs, stdin/outputs, files, sessions, read/ls, and cancelling the awaiting task."""
import asyncio
import hashlib
import io
import os

import pytest
from conftest import commands, config, running_with, wait_for

from contree_sdk.sdk.exceptions import DisposableImageRunError


def contree(d):
    from contree_sdk import Contree

    return Contree(config(d))


def test_async_runs_outputs_and_stdin(daemon, run_async):
    async def go():
        img = await contree(daemon).images.use("local")
        r = await img.run(shell='echo "$A"; echo e >&2; exit 4', env={"A": "x"}, cwd=daemon.root)
        assert (r.exit_code, r.stdout, r.stderr) == (4, "x\n", "e\n")
        r = await img.run("cat", stdin=b"\x00\x01", stdout=bytes)
        assert r.stdout == b"\x00\x01"
        bio = io.BytesIO()
        r = await img.run("cat", stdin="str in", stdout=bio)
        assert bio.getvalue() == b"str in"
        r = await img.run(shell="head -c 5000 /dev/zero", truncate_output_at=100, stdout=bytes)
        assert r.result.truncated and r.stdout == b"\0" * 100
        # Concurrent runs on the one host.
        rs = await asyncio.gather(*(img.run("echo", args=[str(i)]) for i in range(8)))
        assert [r.stdout for r in rs] == [f"{i}\n" for i in range(8)]
    run_async(go())


def test_async_files_session_and_inspect(daemon, run_async):
    async def go():
        c = contree(daemon)
        img = await c.images.use("local")
        f = os.path.join(daemon.root, "async", "f")
        content = os.urandom(10_000)
        r = await img.run(shell=f"sha256sum < {f}", files={f: content}, disposable=False)
        assert r.stdout.split()[0] == hashlib.sha256(content).hexdigest()
        assert await r.read(f) == content
        assert [e.name for e in await r.ls(os.path.dirname(f))] == ["f"]
        s = img.session()
        await s.run(shell=f"echo one > {f}.s", disposable=False)
        assert (await s.run(shell=f"cat {f}.s", disposable=False)).stdout == "one\n"
        assert s.uuid == (await c.images.use("local", strict=True)).uuid
        await s.run(shell="true")
        with pytest.raises(DisposableImageRunError):
            s.run(shell="true")
    run_async(go())


def test_cancelling_the_awaiting_task_kills_the_command(daemon, run_async):
    marker = "sleep 31.5"

    async def go():
        img = await contree(daemon).images.use("local")
        task = asyncio.ensure_future(img.run(shell=f"exec {marker}")._await())
        await asyncio.to_thread(wait_for, lambda: running_with(daemon, marker), "the run to start")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    run_async(go())

    def killed():
        mine = [c for c in commands(daemon) if marker in " ".join(c["argv"])]
        return mine and mine[0].get("exit") and mine[0]["exit"]["reason"] == "killed"
    wait_for(killed, "the cancelled run's command to be killed")
