"""What the live host cannot honour (other images, tags, imports, chaining off a disposable run), errors in the
vendor's shape, runs as ordinary tether commands, a poll through cut connections, and a graceful restart mid-run."""
import asyncio
import os
import uuid

import httpx
import pytest
from conftest import CutProxy, CuttableProxy, Daemon, commands, config, running_with, url, wait_for

from contree_sdk import Contree, ContreeSync
from contree_sdk.sdk.exceptions import (
    ApiStatusCodeError,
    CancelledOperationError,
    ContreeTransportError,
    DisposableImageRunError,
    ForbiddenError,
    NotFoundError,
    UnprocessableEntityError,
)


def test_an_older_or_unknown_image_is_refused(client):
    other = client.images.use(str(uuid.uuid4()))
    with pytest.raises(NotFoundError) as e:
        other.run(shell="true").wait()
    assert "copy-on-write" in e.value.error
    with pytest.raises(NotFoundError):
        other.read("/etc/hostname")
    with pytest.raises(NotFoundError):
        other.ls("/")
    with pytest.raises(NotFoundError):
        client.images.use(str(uuid.uuid4()), strict=True)
    with pytest.raises(NotFoundError):
        client.images.use("ubuntu:22.04").run(shell="true").wait()


def test_branching_is_refused(client, img):
    # A disposable run's changes cannot be discarded: it has no result image, so nothing can branch from it.
    r = img.run(shell="true").wait()
    assert r.uuid is None and r.exit_code == 0
    with pytest.raises(DisposableImageRunError):
        r.run(shell="true")
    # A tag would pin a state the live host cannot keep; importing needs a container backend.
    kept = img.run(shell="true", disposable=False).wait()
    with pytest.raises(UnprocessableEntityError):
        kept.tag_as("v1")
    with pytest.raises(UnprocessableEntityError):
        kept.untag()
    with pytest.raises(ApiStatusCodeError) as e:
        client.images.oci("docker.io/library/alpine:3")
    assert e.value.status == 501
    assert [i.tag for i in client.images()] == ["local"]


def test_errors_in_the_vendors_shape(daemon, client):
    from contree_sdk._internals.utils.wrapper import coro_sync

    with pytest.raises(NotFoundError):
        coro_sync(client._api.get_operation_status(str(uuid.uuid4())))
    with pytest.raises(NotFoundError):
        coro_sync(client._api.cancel_operation(str(uuid.uuid4())))
    with pytest.raises(UnprocessableEntityError):
        coro_sync(client._api.get_operation_status("not-a-uuid"))
    with pytest.raises(NotFoundError):
        coro_sync(client._api.get_file_by_sha256("0" * 64))
    img = client.images.use("local")
    with pytest.raises(UnprocessableEntityError):
        img.run("/no/such/program").wait()
    with pytest.raises(UnprocessableEntityError):
        img.run("true", cwd="/no/such/dir").wait()
    with pytest.raises(NotFoundError):
        img.read(os.path.join(daemon.root, "no-such-file"))
    with pytest.raises(UnprocessableEntityError):
        img.read(daemon.root)
    h = {"Authorization": f"Bearer {daemon.token}"}
    for method, path, body in [
        ("POST", "/v1/instances", b"{not json"),
        ("POST", "/v1/instances", b'{"command": "true", "image": "tag:local", "timeout": 0}'),
        ("POST", "/v1/instances", b'{"command": "true", "image": "tag:local", "truncate_output_at": -1}'),
        ("POST", "/v1/instances", b'{"command": "cat", "image": "tag:local", "stdin": {"value": "!", "encoding": "base64"}}'),
        ("POST", "/v1/instances", b'{"command": "true", "image": "tag:local", "files": {"/x": {"uuid": "' +
         str(uuid.uuid4()).encode() + b'", "mode": "0644", "uid": 0, "gid": 0}}}'),
        ("GET", "/v1/nothing-here", None),
        ("GET", "/v1/files/xyz", None),
    ]:
        resp = httpx.request(method, url(daemon) + path, headers=h, content=body)
        assert 400 <= resp.status_code < 500, (path, resp.status_code)
        assert resp.json() == {"status": resp.status_code, "error": resp.json()["error"]}, resp.text
        assert resp.json()["error"]


def test_a_wrong_token_raises_the_sdks_error(daemon):
    c = ContreeSync(config(daemon, token="wrong-token"))
    with pytest.raises(ApiStatusCodeError) as e:
        c.images.use("local").run(shell="true").wait()
    # In the SDK's shape: its error carries the status and the message.
    assert (e.value.status, "token" in (e.value.error or "")) == (401, True), vars(e.value)


def test_a_run_is_an_ordinary_tether_command(daemon, run_async):
    marker = "sleep 32.5"

    async def go():
        c = Contree(config(daemon))
        img = await c.images.use("local")
        task = asyncio.ensure_future(img.run(shell=f"exec {marker}")._await())
        mine = await asyncio.to_thread(wait_for, lambda: running_with(daemon, marker), "the run in tether ls")
        op = mine[0]["labels"]["contree.operation"]
        uuid.UUID(op)
        # Killed natively: the operation ends as cancelled.
        from conftest import tether_cli
        assert tether_cli(daemon, "kill", mine[0]["command"]).returncode == 0
        with pytest.raises(CancelledOperationError):
            await task
    run_async(go())


def test_polls_survive_cut_connections(daemon, run_async):
    # Every connection is cut before each poll (none in flight): each poll finds its pooled connection dead and
    # opens a new one; the operation goes on in the daemon and completes.
    proxy = CuttableProxy(daemon.url)
    try:
        async def go():
            c = Contree(config(daemon, base=proxy.url + "/compat/contree"))
            real, polls = c._api.get_operation_status, []

            async def cut_then_poll(op):
                proxy.cut_all()
                polls.append(op)
                # The FIN has to reach the client's pooled socket; there is no event to await for it.
                await asyncio.sleep(0.05)
                return await real(op)

            c._api.get_operation_status = cut_then_poll
            img = await c.images.use("local")
            r = await img.run(shell="sleep 1; echo done")
            assert (r.exit_code, r.stdout) == (0, "done\n")
            assert len(polls) >= 3
        run_async(go())
    finally:
        proxy.close()


def test_a_poll_cut_mid_response_raises_and_cancels(daemon, run_async):
    # A cut inside a poll's response: the SDK raises its transport error and, as it does for any error while
    # waiting, cancels the operation (DELETE on a new connection), which kills the command.
    marker = "sleep 33.5"
    proxy = CutProxy(daemon.url, budget=300)
    try:
        async def go():
            c = Contree(config(daemon, base=proxy.url + "/compat/contree"))
            img = await c.images.use("local")
            with pytest.raises(ContreeTransportError):
                await img.run(shell=f"exec {marker}")
        run_async(go())
    finally:
        proxy.close()

    def killed():
        mine = [x for x in commands(daemon) if marker in " ".join(x["argv"])]
        return mine and mine[0].get("exit") and mine[0]["exit"]["reason"] == "killed"
    wait_for(killed, "the run to be cancelled")


def test_a_graceful_restart_mid_run(run_async):
    with Daemon() as d:
        marker = "restart-run"

        async def go():
            c = Contree(config(d))
            img = await c.images.use("local")
            big = os.path.join(d.root, "pre-restart")
            task = asyncio.ensure_future(img.run(
                shell=f"echo before; head -c 300000 /dev/zero; : {marker}; "
                      f"while [ ! -e {big} ]; do sleep 0.05; done; echo after",
                stdout=bytes, disposable=False, truncate_output_at=1 << 20)._await())
            await asyncio.to_thread(wait_for, lambda: running_with(d, marker), "the run to start")
            n = d.restart()
            await asyncio.to_thread(d.wait_lines, n)
            # The run only ends after the restart.
            open(big, "w").close()
            r = await task
            assert r.exit_code == 0 and r.result.truncated is False
            assert r.stdout == b"before\n" + b"\0" * 300000 + b"after\n"
            assert r.uuid == (await c.images.use("local", strict=True)).uuid
            # The command was handed over with its operation: still listed, still labelled.
            assert [x for x in commands(d) if marker in " ".join(x["argv"])][0]["labels"]["contree.operation"]
        run_async(go())


def test_files_and_reads_are_confined_to_the_files_root(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    with Daemon("--files-root", str(root)) as d:
        c = ContreeSync(config(d))
        img = c.images.use("local")
        inside = str(root / "in" / "f")
        img.run(shell="true", files={inside: b"inside"}).wait()
        assert (root / "in" / "f").read_bytes() == b"inside"
        assert img.read(inside) == b"inside"
        assert [e.name for e in img.ls(str(root))] == ["in"]
        for outside in ("/etc/passwd", str(root / ".." / "outside")):
            with pytest.raises(ForbiddenError):
                img.read(outside)
        with pytest.raises(ForbiddenError):
            img.ls("/")
        with pytest.raises(ForbiddenError):
            img.run(shell="true", files={str(tmp_path / "escape"): b"x"}).wait()
        assert not (tmp_path / "escape").exists()
