"""The unchanged runta-sdk (async `AsyncRunta`) against a real tether
daemon through /compat/runta."""
import asyncio
import hashlib
import os
import time

import pytest
from runta import ApiError, AsyncRunta

from conftest import CuttableProxy, url
from support import Gate, make_tree, observers_started, tree


def run(coro):
    return asyncio.run(coro)


def client(daemon, endpoint=None, attempts=2):
    return AsyncRunta(endpoint=endpoint or url(daemon), token=daemon.token, retry_max_attempts=attempts, timeout=20)


def test_async_exec_shell_argv_env_stdin(daemon, tmp_path):
    async def main():
        async with client(daemon) as c:
            assert await c.health() is True
            rt = await c.runtimes.get("local")
            r = await rt.exec("echo out; echo err >&2; exit 3")
            assert (r.exit_code, r.stdout, r.stderr) == (3, b"out\n", b"err\n")
            assert (await rt.exec(["printf", "%s|", "a b"], cwd=str(tmp_path))).stdout == b"a b|"
            assert (await rt.exec("pwd", cwd=str(tmp_path))).stdout == f"{tmp_path}\n".encode()
            assert (await rt.exec("echo $X", env={"X": "v"})).stdout == b"v\n"
            assert (await rt.exec("cat", stdin="str in")).stdout == b"str in"
            assert (await rt.exec(["cat"], stdin=b"\x00bytes")).stdout == b"\x00bytes"
    run(main())


def test_async_timeout_and_truncation(daemon):
    async def main():
        async with client(daemon) as c:
            rt = await c.runtimes.get("local")
            r = await rt.exec("sleep 30", timeout=1)
            assert r.exit_code == 124 and r.stderr.endswith(b"Command timed out after 1 seconds.")
            r = await rt.exec("head -c 64 /dev/zero >&2", max_output_bytes=8)
            assert (len(r.stderr), r.stderr_truncated, r.stdout_truncated) == (8, True, False)
    run(main())


def test_async_5mb_byte_exact(daemon, tmp_path):
    data = os.urandom(5_000_000)
    want = hashlib.sha256(data).hexdigest()

    async def main():
        async with client(daemon) as c:
            rt = await c.runtimes.get("local")
            src = str(tmp_path / "big")
            await rt.files.write(src, data)
            out = await rt.exec(["cat", src], max_output_bytes=6 << 20)
            err = await rt.exec(f"cat {src} >&2", max_output_bytes=6 << 20)
            assert hashlib.sha256(out.stdout).hexdigest() == want
            assert hashlib.sha256(err.stderr).hexdigest() == want
    run(main())


def test_async_exec_detached_awaited_later(daemon, tmp_path):
    gate = Gate(str(tmp_path))

    async def main():
        async with client(daemon) as c:
            rt = await c.runtimes.get("local")
            task = rt.exec_detached(gate.wait_cmd)
            await asyncio.to_thread(gate.wait_started)
            assert (await rt.exec("echo meanwhile")).stdout == b"meanwhile\n"
            assert not task.done()
            await asyncio.to_thread(gate.open)
            r = await task
            assert (r.exit_code, r.stdout) == (0, b"released go\n")
    run(main())


def test_async_files_and_trees(daemon, tmp_path):
    async def main():
        async with client(daemon) as c:
            rt = await c.runtimes.get("local")
            p = str(tmp_path / "x" / "a.sh")
            await rt.files.write(p, "#!/bin/sh\necho hi\n", executable=True)
            assert await rt.files.read(p) == b"#!/bin/sh\necho hi\n"
            assert (await rt.exec([p])).stdout == b"hi\n"
            with pytest.raises(ApiError) as e:
                await rt.files.read(str(tmp_path / "missing"))
            assert (e.value.status_code, e.value.code) == (404, "not_found")
            local = make_tree(str(tmp_path / "local"))
            remote = str(tmp_path / "remote")
            await rt.files.upload(local, remote)
            assert tree(remote) == tree(local)
            down = tmp_path / "down"
            await rt.files.download(remote, str(down))
            assert tree(str(down)) == tree(local)
            one = tmp_path / "one.bin"
            one.write_bytes(os.urandom(100_000))
            await rt.files.upload(str(one), remote + "/")
            back = tmp_path / "back.bin"
            await rt.files.download(remote + "/one.bin", str(back))
            assert back.read_bytes() == one.read_bytes()
    run(main())


def test_async_errors(daemon):
    async def main():
        async with client(daemon) as c:
            with pytest.raises(ApiError) as e:
                await c.runtimes.get("elsewhere")
            assert (e.value.status_code, e.value.code) == (404, "not_found")
        async with AsyncRunta(endpoint=url(daemon), token="wrong", retry_max_attempts=1) as bad:
            with pytest.raises(ApiError) as e:
                await bad.runtimes.get("local")
            assert e.value.status_code == 401
    run(main())


def test_async_exec_survives_a_cut_websocket(daemon, tmp_path):
    proxy = CuttableProxy(daemon.url)
    gate = Gate(str(tmp_path))

    async def main():
        async with client(daemon, endpoint=proxy.url + "/compat/runta", attempts=3) as c:
            rt = await c.runtimes.get("local")
            since = int(time.time() * 1000) - 1000
            task = rt.exec_detached(gate.wait_cmd + "; echo tail >&2")
            await asyncio.to_thread(gate.wait_started)
            proxy.cut_all()
            await asyncio.to_thread(gate.open)
            r = await asyncio.wait_for(task, 45)
            assert (r.exit_code, r.stdout, r.stderr) == (0, b"released go\n", b"tail\n")
            assert await asyncio.to_thread(observers_started, daemon, since) >= 1
    try:
        run(main())
    finally:
        proxy.close()
