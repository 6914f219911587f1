"""Where the daemon is and which token to send, found as the ``tether`` CLI
finds them: an argument, else ``TETHER_URL`` / ``TETHER_TOKEN``, else the
token file (``TETHER_TOKEN_FILE``, else ``$XDG_CONFIG_HOME/tether/token``,
else ``~/.config/tether/token``, the file ``tether serve`` writes)."""

from __future__ import annotations

import functools
import ipaddress
import os
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union
from urllib.parse import urlsplit, urlunsplit

from ._errors import AuthError, InsecureTransport

DEFAULT_URL = "http://127.0.0.1:7070"


@dataclass(frozen=True)
class Options:
    """Connection and reconnect settings, shared by :class:`~tether.Client`
    and :class:`~tether.AsyncClient`.

    Attributes:
        reconnect_for: give up reconnecting after this many seconds without
            a connection; then every waiting call raises
            :class:`~tether.ConnectionLost`.
        backoff_initial: the first delay between reconnect attempts (doubled
            per failed attempt). A close with code 1001 (the daemon
            restarting) is retried at once.
        backoff_max: the largest delay between attempts.
        window_bytes: flow-control window per attached command: at most this
            much output waits unread in the client per command.
        stdin_window_bytes: most stdin bytes in flight (sent, not yet
            acknowledged) per command.
        keepalive: seconds between pings; a connection silent for three of
            them is dropped and reconnected.
        connect_timeout: seconds to open one connection.
        http_timeout: seconds for one HTTP request (files, code runs) to
            make progress.
        ca_cert: a CA certificate file (PEM) to trust for an ``https://``
            daemon, besides the system's roots (default:
            ``TETHER_CA_CERT``).
        allow_insecure_token: send the token over plain ``http://`` to a
            daemon that is not on this host (refused by default, as the CLI
            does: anyone on the path could read it; default:
            ``TETHER_ALLOW_INSECURE_TOKEN``).
    """

    reconnect_for: float = 300.0
    backoff_initial: float = 0.05
    backoff_max: float = 5.0
    window_bytes: int = 2 << 20
    stdin_window_bytes: int = 1 << 20
    keepalive: float = 15.0
    connect_timeout: float = 10.0
    http_timeout: float = 60.0
    ca_cert: Optional[str] = None
    allow_insecure_token: Optional[bool] = None


def ssl_context(options: Options) -> ssl.SSLContext:
    """The TLS settings for an ``https://``/``wss://`` daemon: the system's
    roots, plus ``options.ca_cert`` (or ``TETHER_CA_CERT``)."""
    return _ssl_context(options.ca_cert or os.environ.get("TETHER_CA_CERT") or None)


@functools.lru_cache(maxsize=8)
def _ssl_context(ca_cert: Optional[str]) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    if ca_cert:
        ctx.load_verify_locations(cafile=ca_cert)
    return ctx


def check_transport(url: str, options: Options) -> None:
    """Raises :class:`~tether.InsecureTransport` if the token would travel in
    clear text to another host: ``http://`` is for a loopback address or
    ``localhost`` only, unless allowed."""
    allowed = options.allow_insecure_token
    if allowed is None:
        allowed = os.environ.get("TETHER_ALLOW_INSECURE_TOKEN", "") not in ("", "0", "false")
    parts = urlsplit(url)
    if parts.scheme == "https" or allowed:
        return
    host = parts.hostname or ""
    try:
        local = ipaddress.ip_address(host).is_loopback
    except ValueError:
        local = host.lower() == "localhost"
    if not local:
        raise InsecureTransport(
            f"refusing to send the token over plain HTTP to {url}: use https:// "
            "(or allow it: allow_insecure_token=True, TETHER_ALLOW_INSECURE_TOKEN=1)"
        )


def default_token_file() -> Optional[Path]:
    """The token file ``tether serve`` writes when it generates a token."""
    xdg = os.environ.get("XDG_CONFIG_HOME")
    if xdg:
        return Path(xdg) / "tether" / "token"
    home = os.environ.get("HOME")
    return Path(home) / ".config" / "tether" / "token" if home else None


def resolve_url(url: Optional[str]) -> str:
    """The daemon's base URL (``http(s)://host:port``), from the argument or
    ``TETHER_URL``; ``ws://``/``wss://`` are accepted too."""
    raw = url or os.environ.get("TETHER_URL") or DEFAULT_URL
    parts = urlsplit(raw if "://" in raw else "http://" + raw)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    if scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"not a tether URL: {raw!r} (expected http://HOST:PORT)")
    return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/"), "", ""))


def resolve_token(token: Optional[str], token_file: Union[str, Path, None] = None) -> str:
    """The bearer token: the argument, ``TETHER_TOKEN``, or the token file."""
    if token:
        return token
    env = os.environ.get("TETHER_TOKEN")
    if env:
        return env
    path = token_file or os.environ.get("TETHER_TOKEN_FILE") or default_token_file()
    if path is None:
        raise AuthError("no token: pass token=, set TETHER_TOKEN, or run `tether serve` to write one")
    try:
        value = Path(path).read_text().strip()
    except OSError as e:
        raise AuthError(
            f"no token: TETHER_TOKEN is unset and the token file {path} is unreadable: {e}"
        ) from e
    if not value:
        raise AuthError(f"no token: the token file {path} is empty")
    return value


def ws_url(base: str, query: str = "") -> str:
    """The WebSocket URL of the protocol at ``base``."""
    parts = urlsplit(base)
    scheme = "wss" if parts.scheme == "https" else "ws"
    return urlunsplit((scheme, parts.netloc, parts.path + "/v1/ws", query, ""))
