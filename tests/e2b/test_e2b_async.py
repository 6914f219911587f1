"""The async E2B SDK (`AsyncSandbox`, e2b 2.63.0) through the same paths
as the sync tests: run, background handles, connect from a second sandbox,
PTY, files, the wrong token."""
import asyncio
import hashlib
import os
import secrets

import pytest

from conftest import url


async def sandbox(daemon, token=None):
    from e2b import AsyncSandbox

    u = url(daemon)
    return await AsyncSandbox.connect("local", api_key=token or daemon.token, api_url=u, sandbox_url=u)


def test_run_output_codes_cwd_envs_timeout_and_callbacks(daemon, run_async):
    from e2b import CommandExitException, TimeoutException

    async def main():
        sbx = await sandbox(daemon)
        r = await sbx.commands.run("echo $A; pwd; echo e >&2", cwd="/tmp", envs={"A": "b"})
        assert (r.stdout, r.stderr, r.exit_code) == ("b\n/tmp\n", "e\n", 0)
        with pytest.raises(CommandExitException) as e:
            await sbx.commands.run("echo x; exit 4")
        assert (e.value.exit_code, e.value.stdout) == (4, "x\n")
        with pytest.raises(TimeoutException):
            await sbx.commands.run("sleep 30", timeout=1)
        seen = []
        await sbx.commands.run("for i in 1 2 3; do echo o$i; echo e$i >&2; sleep 0.05; done",
                               on_stdout=lambda s: seen.append(("o", s)), on_stderr=lambda s: seen.append(("e", s)))
        assert "".join(s for k, s in seen if k == "o") == "o1\no2\no3\n"
        assert "".join(s for k, s in seen if k == "e") == "e1\ne2\ne3\n"
        r = await sbx.commands.run("python3 -c \"import sys; sys.stdout.write('y' * (5 << 20))\"")
        assert r.stdout == "y" * (5 << 20)

    run_async(main())


def test_background_stdin_list_connect_and_kill(daemon, run_async):
    async def main():
        sbx = await sandbox(daemon)
        h = await sbx.commands.run("read x; echo got $x; sleep 0.5; echo later", background=True, stdin=True)
        assert h.pid in [p.pid for p in await sbx.commands.list()]
        await sbx.commands.send_stdin(h.pid, "hi\n")
        await h.disconnect()
        other = await sandbox(daemon)
        seen = []
        again = await other.commands.connect(h.pid, on_stdout=seen.append)
        r = await again.wait()
        assert r.exit_code == 0 and "later\n" in "".join(seen) + r.stdout
        h = await sbx.commands.run("sleep 30", background=True)
        assert await sbx.commands.kill(h.pid) is True
        assert await sbx.commands.kill(h.pid) is False

    run_async(main())


def test_a_pty_resizes_and_is_killed(daemon, run_async):
    from e2b import CommandExitException, PtySize

    async def main():
        sbx = await sandbox(daemon)
        out = bytearray()
        p = await sbx.pty.create(PtySize(rows=12, cols=34), on_data=out.extend)
        await sbx.pty.send_stdin(p.pid, b"stty size\n")
        for _ in range(200):
            if b"12 34" in out:
                break
            await asyncio.sleep(0.05)
        assert b"12 34" in out
        await sbx.pty.resize(p.pid, PtySize(rows=21, cols=43))
        await sbx.pty.send_stdin(p.pid, b"stty size\n")
        for _ in range(200):
            if b"21 43" in out:
                break
            await asyncio.sleep(0.05)
        assert b"21 43" in out
        assert await sbx.pty.kill(p.pid) is True
        with pytest.raises(CommandExitException):
            await p.wait()

    run_async(main())


def test_files_text_bytes_several_tree_and_10_mb(daemon, run_async):
    from e2b import FileNotFoundException

    async def main():
        sbx = await sandbox(daemon)
        base = "a-" + secrets.token_hex(4)
        await sbx.files.write(base + "/t.txt", "text")
        await sbx.files.write_files([{"path": base + "/b.bin", "data": b"\x00\x01"},
                                     {"path": base + "/c.txt", "data": "c"}])
        assert await sbx.files.read(base + "/t.txt") == "text"
        assert bytes(await sbx.files.read(base + "/b.bin", format="bytes")) == b"\x00\x01"
        assert sorted(e.name for e in await sbx.files.list(base)) == ["b.bin", "c.txt", "t.txt"]
        assert await sbx.files.exists(base + "/c.txt") and not await sbx.files.exists(base + "/zz")
        assert (await sbx.files.get_info(base + "/t.txt")).size == 4
        assert await sbx.files.make_dir(base + "/d") is True
        await sbx.files.rename(base + "/c.txt", base + "/d/c2.txt")
        assert await sbx.files.read(base + "/d/c2.txt") == "c"
        data = os.urandom(10 << 20)
        await sbx.files.write(base + "/big.bin", data)
        back = bytes(await sbx.files.read(base + "/big.bin", format="bytes"))
        assert hashlib.sha256(back).digest() == hashlib.sha256(data).digest()
        await sbx.files.remove(base)
        assert not await sbx.files.exists(base)
        with pytest.raises(FileNotFoundException):
            await sbx.files.read(base + "/t.txt")

    run_async(main())


def test_a_wrong_token_is_refused(daemon, run_async):
    from e2b import AuthenticationException

    async def main():
        with pytest.raises(AuthenticationException):
            await sandbox(daemon, token="not-the-token-0123456789abcdef")

    run_async(main())
