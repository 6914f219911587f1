"""Files on the daemon's machine, over the files routes (PROTOCOL.md,
section 17): read, write, stream, stat, list, mkdir, remove, rename, and
whole files or directory trees copied to and from local disk.

Every body streams both ways: no file, and no tar archive of a tree, is
ever held whole in memory, here or in the daemon. Local disk work (reading
a file to upload, writing one downloaded, packing and unpacking a tree)
runs on worker threads, so the event loop never blocks on it.

`AsyncFiles` is the one implementation; `Files` is its blocking twin and
only forwards to it through the client's portal.

# Layout
- `FileStat`: what the daemon says about a path.
- `AsyncFiles`, `AsyncFileStream`: the asyncio API.
- `Files`, `FileStream`: the blocking API.
- private: request and error helpers, the loop-to-thread byte channel,
  the tar packer and the safe tar unpacker.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import io
import json
import os
import posixpath
import stat as stat_mod
import tarfile
import threading
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Callable, Dict, List, Optional, Protocol, Tuple, Union

import httpx

from ._errors import ConnectionLost, FileError, ServerError, TetherError, file_error
from ._portal import Portal

__all__ = [
    "AsyncFileStream",
    "AsyncFiles",
    "FileStat",
    "FileStream",
    "Files",
    "Progress",
    "RemotePath",
    "WriteData",
]

#: A callback ``progress(done_bytes, total)`` told how many bytes have
#: moved so far, and the total when it is known (else ``None``). It runs on
#: the client's event loop thread, so it should return quickly; an
#: exception it raises aborts the transfer.
Progress = Callable[[int, Optional[int]], object]

#: A path on the daemon's machine: relative to the daemon's files root, or
#: absolute.
RemotePath = Union[str, "os.PathLike[str]"]


class _BinaryReader(Protocol):
    """A binary file object: ``open(p, "rb")``, ``io.BytesIO``, a socket's
    ``makefile("rb")``..."""

    def read(self, size: int, /) -> bytes: ...


#: What :meth:`AsyncFiles.write` takes: text (written as UTF-8), bytes, a
#: binary file object (read in chunks on a worker thread), or an iterable or
#: async iterable of bytes chunks.
WriteData = Union[str, bytes, bytearray, memoryview, _BinaryReader, Iterable[bytes], AsyncIterable[bytes]]

# Size of the chunks read from local files and handed to the HTTP body.
_CHUNK = 256 * 1024
# Chunks in flight between the event loop and a tar worker thread.
_CHANNEL_CHUNKS = 4
# Most bytes of an error body read to find its JSON.
_ERROR_BODY_MAX = 64 * 1024

# The error code for an error answer without a JSON body, by status.
_CODE_BY_STATUS = {
    400: "bad_request",
    401: "unauthorized",
    403: "permission_denied",
    404: "not_found",
    409: "exists",
    413: "too_large",
    503: "busy",
    507: "no_space",
}

# tarfile's extraction filters (Python 3.12, and 3.8.17/3.9.17/3.10.12/
# 3.11.4 backports). Without them `_checked_member` does the same checks.
_HAS_DATA_FILTER = hasattr(tarfile, "data_filter")


@dataclass(frozen=True)
class FileStat:
    """What the daemon says about a path (``stat``, ``list``, and the answer
    to ``write`` and ``mkdir``). A final symlink is not followed: its
    ``kind`` is ``"symlink"`` and ``target`` says where it points."""

    name: str
    """The last component of the path (``""`` for the root itself)."""
    kind: str
    """``file``, ``dir``, ``symlink``, ``fifo``, ``socket``,
    ``char_device`` or ``block_device``."""
    size: int
    """Size in bytes."""
    mode: int
    """Permission bits, e.g. ``0o644``."""
    mtime_ms: int
    """Last modification, in milliseconds since the Unix epoch."""
    target: Optional[str] = None
    """A symlink's target, as stored; ``None`` for anything else."""

    @property
    def is_dir(self) -> bool:
        """Whether it is a directory."""
        return self.kind == "dir"

    @property
    def is_file(self) -> bool:
        """Whether it is a regular file."""
        return self.kind == "file"

    @property
    def is_symlink(self) -> bool:
        """Whether it is a symlink (which ``stat`` never follows)."""
        return self.kind == "symlink"


class AsyncFiles:
    """The files API on asyncio, as ``AsyncClient.files``.

    Remote paths are relative to the daemon's files root (its working
    directory, or ``tether serve --files-root``) or absolute. Errors are
    typed: :class:`~tether.FileNotFound` (also a ``FileNotFoundError``),
    :class:`~tether.FileExists`, :class:`~tether.FilePermissionError`,
    :class:`~tether.OutsideRoot` (also a ``PermissionError``), else
    :class:`~tether.FileError` with the daemon's code as ``kind``; a lost
    connection is :class:`~tether.ConnectionLost`.
    """

    def __init__(self, http: httpx.AsyncClient) -> None:
        """``http`` has the daemon's URL as ``base_url`` and the
        ``Authorization`` header."""
        self._http = http

    async def read(
        self, path: RemotePath, *, max_bytes: Optional[int] = None, progress: Optional[Progress] = None
    ) -> bytes:
        """The file's bytes (symlinks inside the root are followed).
        ``max_bytes``: read at most that many. For large files see
        :meth:`stream` or :meth:`download`.

        Example::

            data = await client.files.read("build/out.bin")
        """
        p = _remote(path)
        params: Dict[str, str] = {"path": p}
        if max_bytes is not None:
            params["max_bytes"] = str(_non_negative(max_bytes, "max_bytes"))
        out = bytearray()
        async with self._get_stream("/v1/files", params, p) as resp:
            meter = _Meter(progress, _content_length(resp))
            it = resp.aiter_bytes(_CHUNK)
            while (chunk := await _next_chunk(it, p)) is not None:
                out += chunk
                meter.add(len(chunk))
            meter.finish()
        return bytes(out)

    async def read_text(self, path: RemotePath, encoding: str = "utf-8", errors: str = "strict") -> str:
        """The file's text, decoded with ``encoding``.

        Example::

            config = await client.files.read_text("app/config.toml")
        """
        return (await self.read(path)).decode(encoding, errors)

    def stream(self, path: RemotePath, *, chunk_size: int = 64 * 1024) -> AsyncFileStream:
        """The file's bytes as an async iterator of chunks of at most
        ``chunk_size`` bytes, never whole in memory. The request is made on
        the first iteration (or on ``async with``); iterating to the end or
        leaving the ``async with`` block closes it, so use the block when
        you may stop early.

        Example::

            async with client.files.stream("logs/big.log") as chunks:
                async for chunk in chunks:
                    sink.write(chunk)
        """
        return AsyncFileStream(self, _remote(path), _positive(chunk_size, "chunk_size"))

    async def write(
        self,
        path: RemotePath,
        data: WriteData,
        *,
        mode: Optional[int] = None,
        parents: bool = False,
        progress: Optional[Progress] = None,
    ) -> FileStat:
        """Writes ``data`` to ``path``, streamed as the request body, and
        returns the new file's stat. The daemon replaces the file atomically
        once the whole body has arrived: a reader never sees a partial file,
        and a failed write leaves the old one.

        ``data`` is text (UTF-8), bytes, a binary file object (read from its
        current position, in chunks, on a worker thread), an iterable of
        bytes (iterated on a worker thread) or an async iterable of bytes.
        ``mode``: permission bits (default: the old file's, else ``0o644``);
        ``parents``: create missing directories.

        Example::

            await client.files.write("out/report.txt", "done\\n", parents=True)
            with open("image.iso", "rb") as f:
                await client.files.write("isos/image.iso", f, mode=0o600)
        """
        p = _remote(path)
        params = _params(p, mode=mode, parents=parents)
        body, total, length = _body_of(data)
        headers = {"Content-Length": str(length)} if length is not None else None
        meter = _Meter(progress, total)
        resp = await self._put(
            "/v1/files", p, params, meter.wrap(body), headers=headers, tree=False, parents=parents
        )
        meter.finish()
        return _stat_from(_json(resp, p), p)

    async def upload(
        self, local: Union[str, os.PathLike[str]], remote: RemotePath, *, progress: Optional[Progress] = None
    ) -> None:
        """Copies the local file or directory ``local`` to ``remote``.

        A file becomes the file ``remote`` (its missing parent directories
        are created, its permission bits kept). A directory's contents land
        in the directory ``remote``, created if missing (existing files
        there are replaced, others kept): its subdirectories, files and
        symlinks (stored as they are) with their permission bits; FIFOs,
        sockets and devices are left out. The tree goes as a tar stream
        packed on the fly by a worker thread. ``progress`` counts the file's
        bytes (for a tree: the archive's bytes, with no total).

        Example::

            await client.files.upload("dist/app.tar.gz", "releases/app.tar.gz")
            await client.files.upload("src/", "work/src")
        """
        src, dst = os.fspath(local), _remote(remote)
        st = await asyncio.to_thread(os.stat, src)
        if stat_mod.S_ISDIR(st.st_mode):
            await self._upload_tree(src, dst, progress)
        elif stat_mod.S_ISREG(st.st_mode):
            await self._upload_file(src, dst, stat_mod.S_IMODE(st.st_mode) & 0o777, progress)
        else:
            raise ValueError(f"{src}: neither a regular file nor a directory")

    async def download(
        self, remote: RemotePath, local: Union[str, os.PathLike[str]], *, progress: Optional[Progress] = None
    ) -> None:
        """Copies the remote file or directory ``remote`` to ``local``.

        A file becomes the file ``local`` (missing parent directories are
        created; it appears atomically, with the remote file's permission
        bits and mtime). A directory's contents land in the directory
        ``local``, created if missing: the tree arrives as a tar stream
        unpacked as it comes. Unpacking is safe: an entry with an absolute
        name, a ``..``, or a link pointing outside ``local`` stops the
        download with a :class:`~tether.FileError` of kind ``bad_archive``
        (what was unpacked before it stays). Files keep their permission
        bits less setuid/setgid and group/other write (tarfile's ``data``
        filter), directories theirs with owner ``rwx``. ``progress`` counts
        the file's bytes (for a tree: the archive's bytes, with no total).

        Example::

            await client.files.download("results/run-1", "out/run-1")
        """
        src, dst = _remote(remote), os.fspath(local)
        st = await self.stat(src)
        if st.is_dir:
            await self._download_tree(src, dst, st.name, progress)
        else:
            await self._download_file(src, dst, st, progress)

    async def list(self, path: RemotePath = ".") -> List[FileStat]:
        """The entries of a directory, sorted by name, without ``.`` and
        ``..``.

        Example::

            names = [e.name for e in await client.files.list("src") if e.is_file]
        """
        p = _remote(path)
        body = _json(await self._request("GET", "/v1/files/list", p, params={"path": p}), p)
        entries = body.get("entries") if isinstance(body, dict) else None
        if not isinstance(entries, list):
            raise ServerError(f"{p}: the daemon's listing has no entries: {body!r:.200}")
        return [_stat_from(e, p) for e in entries]

    async def stat(self, path: RemotePath) -> FileStat:
        """What ``path`` is; a final symlink is not followed.

        Example::

            st = await client.files.stat("data.csv")
            print(st.size, oct(st.mode))
        """
        p = _remote(path)
        return _stat_from(_json(await self._request("GET", "/v1/files/stat", p, params={"path": p}), p), p)

    async def exists(self, path: RemotePath) -> bool:
        """Whether something (a file, directory, symlink...) is at ``path``.
        ``False`` when it, or a directory on the way, is missing or not a
        directory; other errors (permission, outside the root) raise.

        Example::

            if not await client.files.exists("venv"):
                ...
        """
        try:
            await self.stat(path)
        except FileError as e:
            if e.kind in ("not_found", "not_a_directory"):
                return False
            raise
        return True

    async def mkdir(self, path: RemotePath, *, parents: bool = False, mode: Optional[int] = None) -> FileStat:
        """Makes a directory (``mode`` default ``0o755``) and returns its
        stat. An existing path is :class:`~tether.FileExists`; with
        ``parents``, missing parents are made too and an existing directory
        is fine.

        Example::

            await client.files.mkdir("work/a/b", parents=True)
        """
        p = _remote(path)
        resp = await self._request(
            "POST", "/v1/files/mkdir", p, params=_params(p, mode=mode, parents=parents)
        )
        return _stat_from(_json(resp, p), p)

    async def remove(self, path: RemotePath, *, recursive: bool = False) -> None:
        """Removes a file, a symlink (not what it points to) or an empty
        directory; ``recursive``: a whole tree (symlinks inside are removed,
        never followed). A directory that is not empty, without
        ``recursive``, is :class:`~tether.FileExists`.

        Example::

            await client.files.remove("build", recursive=True)
        """
        p = _remote(path)
        params = {"path": p}
        if recursive:
            params["recursive"] = "true"
        await self._request("DELETE", "/v1/files", p, params=params)

    async def rename(self, src: RemotePath, dst: RemotePath, *, overwrite: bool = False) -> None:
        """Renames ``src`` to ``dst``. An existing ``dst`` is
        :class:`~tether.FileExists` (its ``path`` is ``dst``) unless
        ``overwrite``.

        Example::

            await client.files.rename("out.tmp", "out.json", overwrite=True)
        """
        a, b = _remote(src), _remote(dst)
        params = {"from": a, "to": b}
        if overwrite:
            params["overwrite"] = "true"
        try:
            await self._request("POST", "/v1/files/rename", a, params=params)
        except FileError as e:
            if e.kind == "exists":
                e.path = b
            raise

    # Transfers of whole files and trees.

    async def _upload_file(self, src: str, dst: str, mode: int, progress: Optional[Progress]) -> None:
        f = await asyncio.to_thread(open, src, "rb")
        try:
            size = os.fstat(f.fileno()).st_size
            meter = _Meter(progress, size)
            params = _params(dst, mode=mode, parents=True)
            await self._put("/v1/files", dst, params, meter.wrap(_read_chunks(f)), tree=False, parents=True)
            meter.finish()
        finally:
            await asyncio.to_thread(f.close)

    async def _upload_tree(self, src: str, dst: str, progress: Optional[Progress]) -> None:
        chan = _Channel(asyncio.get_running_loop())
        packer = asyncio.get_running_loop().run_in_executor(None, _pack_tree, src, chan)
        try:
            meter = _Meter(progress, None)
            await self._put(
                "/v1/files/tar", dst, {"path": dst}, meter.wrap(chan.chunks()), tree=True, parents=True
            )
            meter.finish()
        finally:
            # A failed request leaves the packer waiting to hand over a
            # chunk: closing the channel ends it.
            chan.close()
            await asyncio.wait({packer})

    async def _download_file(self, src: str, dst: str, st: FileStat, progress: Optional[Progress]) -> None:
        async with self._get_stream("/v1/files", {"path": src}, src) as resp:
            meter = _Meter(progress, _content_length(resp))
            out = await asyncio.to_thread(_PartFile, dst)
            try:
                it = resp.aiter_bytes(_CHUNK)
                while (chunk := await _next_chunk(it, src)) is not None:
                    await asyncio.to_thread(out.file.write, chunk)
                    meter.add(len(chunk))
                # A symlink's own mode and mtime say nothing of its target's.
                keep = (st.mode & 0o777, st.mtime_ms) if st.is_file else None
                await asyncio.to_thread(out.commit, keep)
            except BaseException:
                await asyncio.to_thread(out.discard)
                raise
            meter.finish()

    async def _download_tree(self, src: str, dst: str, top: str, progress: Optional[Progress]) -> None:
        loop = asyncio.get_running_loop()
        async with self._get_stream("/v1/files/tar", {"path": src}, src) as resp:
            chan = _Channel(loop)
            unpacker = loop.run_in_executor(None, _unpack_tree, chan, dst, top)
            try:
                meter = _Meter(progress, None)
                it = resp.aiter_bytes(_CHUNK)
                while (chunk := await _next_chunk(it, src)) is not None:
                    try:
                        await chan.put(chunk)
                    except _Closed:
                        # The unpacker stopped: at the archive's end, or on
                        # an error that awaiting it raises.
                        break
                    meter.add(len(chunk))
                chan.end()
                try:
                    await unpacker
                except (_UnsafeEntry, tarfile.TarError) as e:
                    raise FileError(f"{src}: {e}", code="bad_archive", path=src) from e
                meter.finish()
            finally:
                chan.close()
                await asyncio.wait({unpacker})

    # Requests.

    async def _request(
        self,
        method: str,
        url: str,
        path: str,
        *,
        params: Dict[str, str],
        content: Optional[AsyncIterable[bytes]] = None,
        headers: Optional[Dict[str, str]] = None,
    ) -> httpx.Response:
        """One request whose answer is small (JSON or nothing); an error
        answer raises its typed error."""
        try:
            resp = await self._http.request(method, url, params=params, content=content, headers=headers)
        except httpx.TransportError as e:
            raise _lost(method, path, e) from e
        if resp.status_code >= 400:
            raise _error_of(resp.status_code, resp.reason_phrase, resp.content, path)
        return resp

    async def _put(
        self,
        url: str,
        path: str,
        params: Dict[str, str],
        content: AsyncIterable[bytes],
        *,
        headers: Optional[Dict[str, str]] = None,
        tree: bool,
        parents: bool,
    ) -> httpx.Response:
        """A request with a streamed body. The daemon checks the path before
        it reads the body; when it refuses, it reads and drops up to 64 MiB
        of the body before it answers, so that a client still sending gets
        the answer; past that, the client may get a reset instead. Then the
        likely refusal is looked up (`_refusal`) and raised in place of
        :class:`~tether.ConnectionLost`."""
        try:
            return await self._request("PUT", url, path, params=params, content=content, headers=headers)
        except ConnectionLost as lost:
            why = await self._refusal(path, tree=tree, parents=parents)
            if why is None:
                raise
            raise why from lost

    async def _refusal(self, path: str, *, tree: bool, parents: bool) -> Optional[TetherError]:
        """Why the daemon would refuse to write ``path`` (a file, or a tree
        into the directory ``path``) before reading a byte, found with
        stats that change nothing: ``None`` if that is not it."""
        try:
            try:
                st = await self.stat(path)
            except FileError as e:
                if e.kind != "not_found":
                    return e
                # Missing is fine, if its parent is there (or is made).
                if tree or parents:
                    return None
                parent = posixpath.dirname(path.rstrip("/"))
                if not parent or parent == "/" or posixpath.basename(parent) in (".", ".."):
                    return None
                try:
                    pst = await self.stat(parent)
                except FileError as e:
                    e.path = path
                    return e
                if not pst.is_dir and not pst.is_symlink:
                    return FileError(
                        f"{parent}: not a directory", code="not_a_directory", path=path, status=400
                    )
                return None
        except TetherError:
            # Not even a stat gets through: the connection is the problem.
            return None
        if not tree and st.is_dir:
            return FileError(f"{path}: is a directory", code="is_a_directory", path=path, status=400)
        if tree and not st.is_dir and not st.is_symlink:
            return FileError(f"{path}: not a directory", code="not_a_directory", path=path, status=400)
        return None

    def _get_stream(self, url: str, params: Dict[str, str], path: str) -> _Streamed:
        return _Streamed(self._http, url, params, path)


class AsyncFileStream(AsyncIterator[bytes]):
    """A remote file's bytes, chunk by chunk (from
    :meth:`AsyncFiles.stream`). An async iterator and an async context
    manager; iterating to the end, an error, :meth:`aclose` or leaving the
    ``async with`` block closes the request."""

    def __init__(self, files: AsyncFiles, path: str, chunk_size: int) -> None:
        self._files = files
        self._path = path
        self._chunk_size = chunk_size
        self._cm: Optional[_Streamed] = None
        self._it: Optional[AsyncIterator[bytes]] = None
        self._done = False
        self.size: Optional[int] = None
        """The file's length (the daemon's ``Content-Length``), once the
        request is made; ``None`` before, or for a special file."""

    async def _open(self) -> AsyncIterator[bytes]:
        if self._it is None:
            cm = self._files._get_stream("/v1/files", {"path": self._path}, self._path)
            resp = await cm.__aenter__()
            self._cm = cm
            self.size = _content_length(resp)
            self._it = resp.aiter_bytes(self._chunk_size)
        return self._it

    async def __aenter__(self) -> AsyncFileStream:
        await self._open()
        return self

    async def __aexit__(
        self, t: Optional[type[BaseException]], e: Optional[BaseException], tb: Optional[TracebackType]
    ) -> None:
        await self.aclose()

    def __aiter__(self) -> AsyncFileStream:
        return self

    async def __anext__(self) -> bytes:
        if self._done:
            raise StopAsyncIteration
        try:
            chunk = await _next_chunk(await self._open(), self._path)
        except BaseException:
            await self.aclose()
            raise
        if chunk is None:
            await self.aclose()
            raise StopAsyncIteration
        return chunk

    async def aclose(self) -> None:
        """Ends the request (idempotent)."""
        self._done = True
        cm, self._cm = self._cm, None
        if cm is not None:
            await cm.__aexit__(None, None, None)


class Files:
    """The files API for blocking code, as ``Client.files``: the same
    methods as :class:`AsyncFiles`, each run on the client's loop thread.
    Progress callbacks run on that thread too (they must not call the
    client); file objects and iterables given to :meth:`write` are read on
    a worker thread."""

    def __init__(self, portal: Portal, inner: AsyncFiles) -> None:
        self._portal = portal
        self._inner = inner

    def read(
        self, path: RemotePath, *, max_bytes: Optional[int] = None, progress: Optional[Progress] = None
    ) -> bytes:
        """The file's bytes. See :meth:`AsyncFiles.read`.

        Example::

            data = client.files.read("build/out.bin")
        """
        return self._portal.call(self._inner.read(path, max_bytes=max_bytes, progress=progress))

    def read_text(self, path: RemotePath, encoding: str = "utf-8", errors: str = "strict") -> str:
        """The file's text. See :meth:`AsyncFiles.read_text`.

        Example::

            config = client.files.read_text("app/config.toml")
        """
        return self._portal.call(self._inner.read_text(path, encoding, errors))

    def stream(self, path: RemotePath, *, chunk_size: int = 64 * 1024) -> FileStream:
        """The file's bytes as an iterator of chunks. See
        :meth:`AsyncFiles.stream`.

        Example::

            with client.files.stream("logs/big.log") as chunks:
                for chunk in chunks:
                    sink.write(chunk)
        """
        return FileStream(self._portal, self._inner.stream(path, chunk_size=chunk_size))

    def write(
        self,
        path: RemotePath,
        data: WriteData,
        *,
        mode: Optional[int] = None,
        parents: bool = False,
        progress: Optional[Progress] = None,
    ) -> FileStat:
        """Writes ``data`` to ``path`` atomically. See :meth:`AsyncFiles.write`.

        Example::

            with open("image.iso", "rb") as f:
                client.files.write("isos/image.iso", f, parents=True)
        """
        return self._portal.call(self._inner.write(path, data, mode=mode, parents=parents, progress=progress))

    def upload(
        self, local: Union[str, os.PathLike[str]], remote: RemotePath, *, progress: Optional[Progress] = None
    ) -> None:
        """Copies a local file or tree to the daemon. See
        :meth:`AsyncFiles.upload`.

        Example::

            client.files.upload("src/", "work/src")
        """
        self._portal.call(self._inner.upload(local, remote, progress=progress))

    def download(
        self, remote: RemotePath, local: Union[str, os.PathLike[str]], *, progress: Optional[Progress] = None
    ) -> None:
        """Copies a remote file or tree to local disk. See
        :meth:`AsyncFiles.download`.

        Example::

            client.files.download("results/run-1", "out/run-1")
        """
        self._portal.call(self._inner.download(remote, local, progress=progress))

    def list(self, path: RemotePath = ".") -> List[FileStat]:
        """A directory's entries, sorted by name. See :meth:`AsyncFiles.list`.

        Example::

            names = [e.name for e in client.files.list("src")]
        """
        return self._portal.call(self._inner.list(path))

    def stat(self, path: RemotePath) -> FileStat:
        """What ``path`` is. See :meth:`AsyncFiles.stat`.

        Example::

            size = client.files.stat("data.csv").size
        """
        return self._portal.call(self._inner.stat(path))

    def exists(self, path: RemotePath) -> bool:
        """Whether something is at ``path``. See :meth:`AsyncFiles.exists`.

        Example::

            if client.files.exists("venv"):
                ...
        """
        return self._portal.call(self._inner.exists(path))

    def mkdir(self, path: RemotePath, *, parents: bool = False, mode: Optional[int] = None) -> FileStat:
        """Makes a directory. See :meth:`AsyncFiles.mkdir`.

        Example::

            client.files.mkdir("work/a/b", parents=True)
        """
        return self._portal.call(self._inner.mkdir(path, parents=parents, mode=mode))

    def remove(self, path: RemotePath, *, recursive: bool = False) -> None:
        """Removes a file, symlink or directory. See :meth:`AsyncFiles.remove`.

        Example::

            client.files.remove("build", recursive=True)
        """
        self._portal.call(self._inner.remove(path, recursive=recursive))

    def rename(self, src: RemotePath, dst: RemotePath, *, overwrite: bool = False) -> None:
        """Renames ``src`` to ``dst``. See :meth:`AsyncFiles.rename`.

        Example::

            client.files.rename("out.tmp", "out.json", overwrite=True)
        """
        self._portal.call(self._inner.rename(src, dst, overwrite=overwrite))


class FileStream(Iterator[bytes]):
    """A remote file's bytes, chunk by chunk (from :meth:`Files.stream`).
    An iterator and a context manager; iterating to the end, an error,
    :meth:`close` or leaving the ``with`` block closes the request."""

    def __init__(self, portal: Portal, inner: AsyncFileStream) -> None:
        self._portal = portal
        self._inner = inner
        self._it = portal.iterate(inner)

    @property
    def size(self) -> Optional[int]:
        """The file's length, once the request is made (see
        :attr:`AsyncFileStream.size`)."""
        return self._inner.size

    def __enter__(self) -> FileStream:
        self._portal.call(self._inner.__aenter__())
        return self

    def __exit__(
        self, t: Optional[type[BaseException]], e: Optional[BaseException], tb: Optional[TracebackType]
    ) -> None:
        self.close()

    def __iter__(self) -> FileStream:
        return self

    def __next__(self) -> bytes:
        return next(self._it)

    def close(self) -> None:
        """Ends the request (idempotent)."""
        self._portal.call(self._inner.aclose())


# Requests and answers.


class _Streamed:
    """``async with``: a request whose answer body is read as it comes; an
    error answer raises its typed error, and the response is closed on
    exit."""

    def __init__(self, http: httpx.AsyncClient, url: str, params: Dict[str, str], path: str) -> None:
        self._http = http
        self._url = url
        self._params = params
        self._path = path
        self._resp: Optional[httpx.Response] = None

    async def __aenter__(self) -> httpx.Response:
        try:
            req = self._http.build_request("GET", self._url, params=self._params)
            resp = await self._http.send(req, stream=True)
        except httpx.TransportError as e:
            raise _lost("GET", self._path, e) from e
        if resp.status_code >= 400:
            try:
                body = await _read_some(resp, _ERROR_BODY_MAX)
            finally:
                await resp.aclose()
            raise _error_of(resp.status_code, resp.reason_phrase, body, self._path)
        self._resp = resp
        return resp

    async def __aexit__(
        self, t: Optional[type[BaseException]], e: Optional[BaseException], tb: Optional[TracebackType]
    ) -> None:
        resp, self._resp = self._resp, None
        if resp is not None:
            await resp.aclose()


async def _read_some(resp: httpx.Response, limit: int) -> bytes:
    """At most about ``limit`` bytes of a streamed body (an error body that
    never ends must not fill memory); a transfer that breaks ends it."""
    out = bytearray()
    try:
        async for chunk in resp.aiter_bytes():
            out += chunk
            if len(out) >= limit:
                break
    except httpx.TransportError:
        pass
    return bytes(out)


async def _next_chunk(it: AsyncIterator[bytes], path: str) -> Optional[bytes]:
    """The next chunk of a body, ``None`` at its end; a broken transfer is
    :class:`~tether.ConnectionLost`."""
    try:
        return await it.__anext__()
    except StopAsyncIteration:
        return None
    except httpx.TransportError as e:
        raise _lost("GET", path, e) from e


def _lost(method: str, path: str, e: httpx.TransportError) -> ConnectionLost:
    return ConnectionLost(f"{method} {path}: lost the connection to the daemon ({type(e).__name__}: {e})")


def _error_of(status: int, reason: str, body: bytes, path: str) -> TetherError:
    """The typed error for an error answer: from its JSON ``{code,
    message, errno}``, or from the status when it has no such body."""
    try:
        obj = json.loads(body) if body else None
    except ValueError:
        obj = None
    if isinstance(obj, dict) and isinstance(obj.get("code"), str):
        code: str = obj["code"]
        message = obj.get("message")
        errno = obj.get("errno")
        return file_error(
            code,
            message if isinstance(message, str) else code,
            errno if isinstance(errno, int) else None,
            path=path,
            status=status,
        )
    text = body.decode("utf-8", "replace").strip()
    message = f"{path}: HTTP {status} {reason}".rstrip() + (f": {text[:300]}" if text else "")
    return file_error(_CODE_BY_STATUS.get(status, "io"), message, None, path=path, status=status)


def _json(resp: httpx.Response, path: str) -> Any:
    try:
        return resp.json()
    except ValueError as e:
        raise ServerError(f"{path}: the daemon's answer is not JSON: {resp.text[:200]!r}") from e


def _stat_from(obj: Any, path: str) -> FileStat:
    """A :class:`FileStat` from its JSON object, checked."""
    if isinstance(obj, dict):
        name, kind, size, mode, mtime, target = (
            obj.get(k) for k in ("name", "kind", "size", "mode", "mtime_ms", "target")
        )
        if (
            isinstance(name, str)
            and isinstance(kind, str)
            and all(isinstance(v, int) and not isinstance(v, bool) for v in (size, mode, mtime))
            and (target is None or isinstance(target, str))
        ):
            return FileStat(name, kind, int(size), int(mode), int(mtime), target)  # type: ignore[arg-type]
    raise ServerError(f"{path}: the daemon's answer is not a file stat: {obj!r:.200}")


def _remote(path: RemotePath) -> str:
    p = os.fspath(path)
    if not isinstance(p, str):
        raise TypeError(f"a remote path is a str, not {type(p).__name__}")
    return p


def _params(path: str, *, mode: Optional[int], parents: bool) -> Dict[str, str]:
    params = {"path": path}
    if mode is not None:
        if isinstance(mode, bool) or not isinstance(mode, int) or not 0 <= mode <= 0o7777:
            raise ValueError(f"mode must be permission bits (0 to 0o7777), not {mode!r}")
        params["mode"] = format(mode, "o")
    if parents:
        params["parents"] = "true"
    return params


def _non_negative(n: int, what: str) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"{what} must be a non-negative int, not {n!r}")
    return n


def _positive(n: int, what: str) -> int:
    if _non_negative(n, what) == 0:
        raise ValueError(f"{what} must be positive")
    return n


def _content_length(resp: httpx.Response) -> Optional[int]:
    try:
        return int(resp.headers["Content-Length"])
    except (KeyError, ValueError):
        return None


class _Meter:
    """Counts bytes for a progress callback: called after each chunk, and
    once more at the end if nothing moved (an empty file), so the last call
    always says the final count."""

    def __init__(self, progress: Optional[Progress], total: Optional[int]) -> None:
        self._progress = progress
        self._total = total
        self._done = 0
        self._told = False

    def add(self, n: int) -> None:
        self._done += n
        if self._progress is not None and n:
            self._told = True
            self._progress(self._done, self._total)

    def finish(self) -> None:
        if self._progress is not None and not self._told:
            self._told = True
            self._progress(self._done, self._total)

    async def wrap(self, chunks: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
        """``chunks``, counted as they are handed to the HTTP body."""
        async for chunk in chunks:
            yield chunk
            self.add(len(chunk))


# Request bodies.


def _body_of(data: WriteData) -> Tuple[AsyncIterable[bytes], Optional[int], Optional[int]]:
    """``data`` as an async iterable of chunks, with its total size when
    known (for progress) and the exact length when it is already in memory
    (for ``Content-Length``)."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    if isinstance(data, (bytes, bytearray, memoryview)):
        view = memoryview(data).cast("B")
        return _slices(view), view.nbytes, view.nbytes
    if hasattr(data, "read"):
        reader: _BinaryReader = data  # type: ignore[assignment]
        return _read_chunks(reader), _remaining(reader), None
    if hasattr(data, "__aiter__"):
        return _checked_async(data), None, None  # type: ignore[arg-type]
    if hasattr(data, "__iter__"):
        return _iterate_in_thread(iter(data)), None, None
    raise TypeError(
        "write() takes str, bytes, a binary file object, or an (async) iterable of bytes, "
        f"not {type(data).__name__}"
    )


async def _slices(view: memoryview) -> AsyncIterator[bytes]:
    for i in range(0, view.nbytes, _CHUNK):
        yield bytes(view[i : i + _CHUNK])


def _remaining(f: _BinaryReader) -> Optional[int]:
    """Bytes left from a regular file's position, if it is one."""
    try:
        fd = f.fileno()  # type: ignore[attr-defined]
        st = os.fstat(fd)
        if stat_mod.S_ISREG(st.st_mode):
            return max(0, st.st_size - int(f.tell()))  # type: ignore[attr-defined]
    except (AttributeError, OSError, ValueError):
        pass
    return None


def _bytes_chunk(chunk: object) -> bytes:
    if isinstance(chunk, bytes):
        return chunk
    if isinstance(chunk, (bytearray, memoryview)):
        return bytes(chunk)
    raise TypeError(f"write() needs bytes chunks, got {type(chunk).__name__} (open files in binary mode)")


async def _read_chunks(f: _BinaryReader) -> AsyncIterator[bytes]:
    """A binary file object's bytes from its position, read on a worker
    thread chunk by chunk."""
    while True:
        chunk = _bytes_chunk(await asyncio.to_thread(f.read, _CHUNK))
        if not chunk:
            return
        yield chunk


async def _iterate_in_thread(it: Iterator[object]) -> AsyncIterator[bytes]:
    """A plain iterator's chunks, each ``next`` on a worker thread (it may
    read a file or wait on anything)."""
    end = object()
    while True:
        chunk = await asyncio.to_thread(next, it, end)
        if chunk is end:
            return
        yield _bytes_chunk(chunk)


async def _checked_async(chunks: AsyncIterable[object]) -> AsyncIterator[bytes]:
    async for chunk in chunks:
        yield _bytes_chunk(chunk)


# A byte channel between the event loop and one worker thread.


class _Closed(Exception):
    """The other end of a `_Channel` went away."""


class _Channel:
    """A bounded pipe of byte chunks between the event loop and one worker
    thread, either way: the tar packer writes into it while the request
    body reads it; the response body is put into it while the tar unpacker
    reads it. At most `_CHANNEL_CHUNKS` chunks wait, so neither side runs
    ahead of the other. The thread blocks on a condition; the loop awaits a
    future that the thread resolves with ``call_soon_threadsafe``. Closing
    (either side) wakes both and makes every later call raise `_Closed`, so
    a failure on one side never leaves the other waiting."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        # Held only for a few bookkeeping steps, never across a wait of the
        # loop: the loop side takes it without blocking in practice.
        self._cond = threading.Condition()
        self._chunks: collections.deque[bytes] = collections.deque()
        self._ended = False
        self._error: Optional[BaseException] = None
        self._closed = False
        self._waiter: Optional[asyncio.Future[None]] = None

    # Both sides.

    def end(self, error: Optional[BaseException] = None) -> None:
        """The writer is done (or failed with ``error``): the reader gets
        what is queued, then the end (or the error)."""
        with self._cond:
            self._ended = True
            self._error = error
            self._cond.notify_all()
        self._wake_loop()

    def close(self) -> None:
        """The reader (or a failed writer) went away: every later call
        raises `_Closed`."""
        with self._cond:
            self._closed = True
            self._chunks.clear()
            self._cond.notify_all()
        self._wake_loop()

    def _wake_loop(self) -> None:
        # A closed loop has nobody waiting any more.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        w, self._waiter = self._waiter, None
        if w is not None and not w.done():
            w.set_result(None)

    # The loop side.

    async def _wait(self, ready: Callable[[], bool]) -> None:
        while True:
            with self._cond:
                if self._closed:
                    raise _Closed
                if ready():
                    return
                w: asyncio.Future[None] = self._loop.create_future()
                self._waiter = w
            await w

    async def put(self, chunk: bytes) -> None:
        """Queues a chunk for the thread, waiting for room."""
        await self._wait(lambda: len(self._chunks) < _CHANNEL_CHUNKS)
        with self._cond:
            self._chunks.append(chunk)
            self._cond.notify_all()

    async def chunks(self) -> AsyncIterator[bytes]:
        """The thread's chunks, to the end; the thread's error raises."""
        while True:
            await self._wait(lambda: bool(self._chunks) or self._ended)
            with self._cond:
                if self._chunks:
                    chunk = self._chunks.popleft()
                    self._cond.notify_all()
                elif self._error is not None:
                    raise self._error
                else:
                    return
            yield chunk

    # The thread side (through `_ThreadFile`).

    def take(self) -> Optional[bytes]:
        """The next chunk from the loop, waiting for one; ``None`` at the
        end."""
        with self._cond:
            while not self._chunks and not self._ended and not self._closed:
                self._cond.wait()
            if self._closed:
                raise _Closed("the transfer stopped")
            if not self._chunks:
                return None
            chunk = self._chunks.popleft()
        self._wake_loop()
        return chunk

    def give(self, chunk: bytes) -> None:
        """Queues a chunk for the loop, waiting for room."""
        with self._cond:
            while len(self._chunks) >= _CHANNEL_CHUNKS and not self._closed:
                self._cond.wait()
            if self._closed:
                raise _Closed("the transfer stopped")
            self._chunks.append(chunk)
        self._wake_loop()


class _ThreadFile:
    """The worker thread's end of a `_Channel` as the file object tarfile
    reads from or writes to (in its streaming modes, which never seek)."""

    def __init__(self, chan: _Channel) -> None:
        self._chan = chan
        self._wbuf = bytearray()
        self._rbuf = memoryview(b"")
        self._pos = 0

    def read(self, size: int = -1, /) -> bytes:
        """Up to ``size`` bytes (fewer at a chunk's end), ``b""`` at the
        end."""
        if not self._rbuf:
            chunk = self._chan.take()
            if chunk is None:
                return b""
            self._rbuf = memoryview(chunk)
        n = len(self._rbuf) if size < 0 else size
        out, self._rbuf = bytes(self._rbuf[:n]), self._rbuf[n:]
        self._pos += len(out)
        return out

    def write(self, b: bytes, /) -> int:
        """Buffers ``b``, handing over a chunk when `_CHUNK` bytes are in."""
        self._wbuf += b
        self._pos += len(b)
        if len(self._wbuf) >= _CHUNK:
            self.flush()
        return len(b)

    def flush(self) -> None:
        """Hands over what is buffered."""
        if self._wbuf:
            chunk, self._wbuf = bytes(self._wbuf), bytearray()
            self._chan.give(chunk)

    def tell(self) -> int:
        return self._pos

    def seek(self, pos: int, /) -> int:
        raise io.UnsupportedOperation("a tar stream cannot seek")

    def close(self) -> None:
        """Nothing: the channel is ended or closed by its owner."""


# Packing a local tree (on a worker thread).


def _pack_tree(root: str, chan: _Channel) -> None:
    """Writes the tree below ``root`` as a tar stream into ``chan``, names
    relative to ``root``; ends ``chan`` (with the error, if one stopped
    it)."""
    try:
        out = _ThreadFile(chan)
        with tarfile.open(fileobj=out, mode="w|", bufsize=64 * 1024, format=tarfile.PAX_FORMAT) as tar:
            for name, full, st in _walk(root, ""):
                _add_entry(tar, name, full, st)
        out.flush()
    except _Closed:
        return
    except BaseException as e:
        chan.end(e)
        return
    chan.end()


def _walk(root: str, prefix: str) -> Iterator[Tuple[str, str, os.stat_result]]:
    """Every entry below ``root`` (symlinks not followed), sorted, each
    directory before what it holds."""
    with os.scandir(root) as it:
        entries = sorted(it, key=lambda e: e.name)
    for e in entries:
        name = f"{prefix}{e.name}"
        st = e.stat(follow_symlinks=False)
        yield name, e.path, st
        if stat_mod.S_ISDIR(st.st_mode):
            yield from _walk(e.path, name + "/")


def _add_entry(tar: tarfile.TarFile, name: str, full: str, st: os.stat_result) -> None:
    info = tarfile.TarInfo(name)
    info.mode = stat_mod.S_IMODE(st.st_mode) & 0o777
    info.mtime = int(st.st_mtime)
    if stat_mod.S_ISDIR(st.st_mode):
        info.type = tarfile.DIRTYPE
        tar.addfile(info)
    elif stat_mod.S_ISLNK(st.st_mode):
        info.type = tarfile.SYMTYPE
        info.linkname = os.readlink(full)
        tar.addfile(info)
    elif stat_mod.S_ISREG(st.st_mode):
        # Always a regular entry (never a hard link, which the daemon
        # refuses), sized by the open file.
        with open(full, "rb") as f:
            info.size = os.fstat(f.fileno()).st_size
            tar.addfile(info, f)
    # FIFOs, sockets and devices are left out, as the daemon's tar does.


# Unpacking a remote tree (on a worker thread).


class _TarSource(Protocol):
    """What tarfile reads a tar stream from (`_ThreadFile`, or
    ``io.BytesIO`` in tests)."""

    def read(self, size: int, /) -> bytes: ...
    def write(self, b: bytes, /) -> object: ...
    def tell(self) -> int: ...
    def seek(self, pos: int, /) -> object: ...
    def close(self) -> object: ...


class _UnsafeEntry(Exception):
    """A tar entry that would land outside the destination."""


def _unpack_tree(src: _Channel, dest: str, top: str) -> None:
    """Unpacks the tar stream read from ``src`` into ``dest`` (created if
    missing), each name stripped of its first component ``top`` (none when
    ``top`` is empty). Closes ``src`` when it stops."""
    try:
        os.makedirs(dest, exist_ok=True)
        _extract(_ThreadFile(src), dest, top)
    finally:
        src.close()


def _extract(fileobj: _TarSource, dest: str, top: str) -> None:
    """Unpacks the tar stream ``fileobj`` into ``dest`` in streaming mode,
    refusing (with `_UnsafeEntry` or tarfile's ``FilterError``) any entry
    that would land outside ``dest``."""
    with tarfile.open(fileobj=fileobj, mode="r|") as tar:
        if _HAS_DATA_FILTER:

            def keep(member: tarfile.TarInfo, dest_path: str) -> Optional[tarfile.TarInfo]:
                name = _entry_name(member.name, top)
                if name is None:
                    return None
                if member.islnk():
                    # The daemon never sends them; unpacking one in
                    # streaming mode would need its target's data again.
                    raise _UnsafeEntry(f"{member.name!r}: a hard link")
                checked = tarfile.data_filter(member.replace(name=name, deep=False), dest_path)
                if checked.isdir():
                    checked = checked.replace(mode=_dir_mode(member.mode), deep=False)
                return checked

            tar.extractall(dest, filter=keep)
        else:
            real = os.path.realpath(dest)
            members = (m for m in (_checked_member(m, real, top) for m in tar) if m is not None)
            # The members are checked already; a Python that has filters
            # (only when tests force this path) must not add its default.
            trusted: Dict[str, Any] = (
                {"filter": "fully_trusted"} if hasattr(tarfile, "fully_trusted_filter") else {}
            )
            tar.extractall(dest, members=members, **trusted)


def _entry_name(name: str, top: str) -> Optional[str]:
    """An entry's name below the destination: without its first component
    ``top``; ``None`` for ``top`` itself."""
    if name.startswith("/"):
        raise _UnsafeEntry(f"{name!r}: an absolute name")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise _UnsafeEntry(f"{name!r}: a '..' in the name")
    if top:
        if not parts or parts[0] != top:
            raise _UnsafeEntry(f"{name!r}: not inside {top!r}")
        parts = parts[1:]
    return "/".join(parts) if parts else None


def _dir_mode(mode: int) -> int:
    """A directory's mode as unpacked: no setuid/setgid/sticky or
    group/other write, and always ``rwx`` for the owner (so what is inside
    can be written)."""
    return (mode & 0o755) | 0o700


def _checked_member(member: tarfile.TarInfo, real_dest: str, top: str) -> Optional[tarfile.TarInfo]:
    """tarfile's ``data`` filter, for Pythons without it: the entry renamed
    below ``real_dest`` and checked, with safe modes and no owner."""
    import copy

    name = _entry_name(member.name, top)
    if name is None:
        return None

    def inside(p: str) -> bool:
        return os.path.commonpath([real_dest, os.path.realpath(p)]) == real_dest

    if not inside(os.path.join(real_dest, name)):
        raise _UnsafeEntry(f"{member.name!r}: would land outside the destination")
    if member.issym():
        if os.path.isabs(member.linkname):
            raise _UnsafeEntry(f"{member.name!r}: a link to an absolute path")
        if not inside(os.path.join(real_dest, os.path.dirname(name), member.linkname)):
            raise _UnsafeEntry(f"{member.name!r}: a link pointing outside the destination")
    elif member.islnk() or not (member.isfile() or member.isdir()):
        raise _UnsafeEntry(f"{member.name!r}: a hard link or special file")
    out = copy.copy(member)
    out.name = name
    if member.isfile():
        mode = (member.mode & 0o755) | 0o600
        if not mode & 0o100:
            mode &= ~0o011
        out.mode = mode
    elif member.isdir():
        out.mode = _dir_mode(member.mode)
    out.uid, out.gid, out.uname, out.gname = os.getuid(), os.getgid(), "", ""
    return out


# Writing a downloaded file (on worker threads).


class _PartFile:
    """A file downloaded next to its destination under a temporary name,
    then renamed over it: the destination is never seen half written."""

    def __init__(self, dest: str) -> None:
        self.dest = os.path.abspath(dest)
        parent, name = os.path.split(self.dest)
        os.makedirs(parent, exist_ok=True)
        self.tmp = os.path.join(parent, f".{name}.{os.urandom(8).hex()}.tether-part")
        self.file = open(self.tmp, "xb")  # noqa: SIM115 (closed by commit or discard)

    def commit(self, keep: Optional[Tuple[int, int]]) -> None:
        """Closes the file and renames it into place; ``keep``: the mode
        and mtime (ms) it takes."""
        self.file.close()
        if keep is not None:
            mode, mtime_ms = keep
            os.chmod(self.tmp, mode)
            os.utime(self.tmp, ns=(mtime_ms * 1_000_000, mtime_ms * 1_000_000))
        os.replace(self.tmp, self.dest)

    def discard(self) -> None:
        self.file.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.tmp)
