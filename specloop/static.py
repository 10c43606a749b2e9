"""Static routes for the fast path: files → the engine's static store.

A route maps a URL prefix to a directory.  When a bypass listener starts,
the files of the routes for its port are read once and registered in C
with the header fields aiohttp's ``FileResponse`` sends for them (so the
answers are the same, byte for byte, whoever gives them).  A watcher polls
the directories twice a second: a changed file is registered again, a
deleted one is removed (and then falls through to the Python app, 404).

Only what can be served exactly is registered: regular files (symlinks
only with ``follow_symlinks``), within ``max_file_size`` and the memory
budget, with names that are plain URL path segments.  Everything else is
left to the app on the same connection.
"""

from __future__ import annotations

import asyncio
import dataclasses
import http
import logging
import os
import stat
import sys
from typing import TYPE_CHECKING, Any, Callable, Iterable

if TYPE_CHECKING:
    from .stack import Stack

__all__ = ["StaticRoute", "StaticRegistry", "route_providers"]

logger = logging.getLogger("specloop")

MIB = 1 << 20
_BAD_NAME_CHARS = set("%?#\\\x7f") | {chr(i) for i in range(32)}

# Functions protocol_factory -> routes, so that a server framework's own
# registration (specloop.aiohttp.add_static) reaches its listener.
route_providers: list[Callable[[Any], list["StaticRoute"]]] = []


@dataclasses.dataclass(frozen=True)
class StaticRoute:
    """``prefix`` (URL path, e.g. "/static") served from ``directory``."""

    prefix: str
    directory: str
    max_file_size: int = 16 * MIB
    memory_budget: int = 256 * MIB
    cache_control: str | None = None
    follow_symlinks: bool = False
    keepalive_timeout: float = 75.0
    # False: a connection that had one request go to the app stays the
    # app's (for connection-bound schemes: NTLM/Negotiate auth, state kept
    # per connection by the protocol object)
    hand_back: bool = True

    @classmethod
    def make(cls, prefix: str, directory: Any, **options: Any) -> "StaticRoute":
        """Checks the arguments; raises ValueError/TypeError naming them."""
        unknown = set(options) - {"max_file_size", "memory_budget", "cache_control",
                                  "follow_symlinks", "keepalive_timeout", "hand_back"}
        if unknown:
            raise TypeError(f"static route: unknown option(s) {', '.join(sorted(unknown))}")
        if not isinstance(prefix, str) or not prefix.startswith("/"):
            raise ValueError(f"static route: prefix={prefix!r} must be a URL path starting with '/'")
        prefix = prefix.rstrip("/")
        if any(c in _BAD_NAME_CHARS for c in prefix):
            raise ValueError(f"static route: prefix={prefix!r} has characters a URL path cannot")
        directory = os.path.abspath(os.fspath(directory))
        if not os.path.isdir(directory):
            raise ValueError(f"static route: directory={directory!r} is not a directory")
        for name in ("max_file_size", "memory_budget"):
            v = options.get(name, getattr(cls, name))
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ValueError(f"static route: {name}={v!r} must be a byte count >= 0")
        cc = options.get("cache_control")
        if cc is not None and (not isinstance(cc, str) or any(ord(c) < 32 for c in cc)):
            raise ValueError(f"static route: cache_control={cc!r} must be a header value")
        if not isinstance(options.get("hand_back", True), bool):
            raise ValueError(f"static route: hand_back={options['hand_back']!r} must be a bool")
        ka = options.get("keepalive_timeout", cls.keepalive_timeout)
        if not isinstance(ka, (int, float)) or ka < 0:
            raise ValueError(f"static route: keepalive_timeout={ka!r} must be seconds >= 0")
        return cls(prefix=prefix, directory=directory, **options)

    @property
    def extra_headers(self) -> str:
        return f"Cache-Control: {self.cache_control}\r\n" if self.cache_control else ""


def _aiohttp_fields():
    """aiohttp's own content-type guesser, date format and Server value."""
    from aiohttp import web
    from aiohttp.http import SERVER_SOFTWARE
    from aiohttp.web_fileresponse import CONTENT_TYPES, FALLBACK_CONTENT_TYPE

    if sys.version_info >= (3, 13):
        guess = CONTENT_TYPES.guess_file_type
    else:
        guess = CONTENT_TYPES.guess_type

    def content_type(path: str) -> str:
        return guess(path)[0] or FALLBACK_CONTENT_TYPE

    def last_modified(mtime: float) -> str:
        r = web.StreamResponse()
        r.last_modified = mtime
        return r.headers["Last-Modified"]

    return content_type, last_modified, SERVER_SOFTWARE


@dataclasses.dataclass
class _Registered:
    path: str           # file system path
    url: str            # decoded URL path
    mtime_ns: int
    size: int
    ino: int
    siblings: tuple = ()  # (encoding, mtime_ns, size, ino) of each sibling


class StaticRegistry:
    """The static routes of one stack: those asked for (per port, or for
    every port), and the files served for each listening port."""

    def __init__(self, stack: "Stack") -> None:
        self._stack = stack
        self._wanted: dict[int | None, list[StaticRoute]] = {}   # port (None: all)
        self._by_port: dict[int, list[StaticRoute]] = {}          # being served
        self._files: dict[int, dict[str, _Registered]] = {}
        self._bytes = 0
        self._budget = 0
        self._watcher: asyncio.TimerHandle | None = None
        self._fields = None

    def want(self, route: StaticRoute, port: int | None) -> None:
        """``route`` is for the listeners of ``port`` (all if None), those
        there now (the caller serves it on them) and those to come."""
        self._wanted.setdefault(port, []).append(route)

    def routes_for(self, port: int, factory: Any) -> list[StaticRoute]:
        """The routes a new listener on ``port`` with this protocol factory
        serves: those asked for it or for every port, and those its
        framework registers (``route_providers``, e.g. specloop.aiohttp)."""
        routes = [*self._wanted.get(None, []), *self._wanted.get(port, [])]
        for provider in route_providers:
            routes.extend(provider(factory))
        return routes

    def serve(self, port: int, routes: Iterable[StaticRoute]) -> int:
        """Registers the routes' files for ``port``; returns how many files."""
        routes = list(routes)
        if not routes:
            return 0
        if self._fields is None:
            self._fields = _aiohttp_fields()
        _, _, server = self._fields
        ka = min(r.keepalive_timeout for r in routes)
        self._budget = max(self._budget, max(r.memory_budget for r in routes))
        # aiohttp words a status as http.HTTPStatus does on this Python
        # (3.13 renamed 416 "Range Not Satisfiable")
        self._stack.engine.static_config(
            server, self._budget, int(ka * 1000),
            http.HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE.phrase)
        self._by_port.setdefault(port, []).extend(routes)
        self._files.setdefault(port, {})
        self._scan(port)
        self._arm()
        return len(self._files[port])

    def hand_back(self, port: int) -> bool:
        """Whether connections on ``port`` come back to the fast path after
        the app answered (off as soon as one of its routes says so)."""
        return all(r.hand_back for r in self._by_port.get(port, []))

    def forget_port(self, port: int) -> None:
        """The listener on ``port`` closed: its files leave the store."""
        self._by_port.pop(port, None)
        for url in list(self._files.get(port, {})):
            self._remove(port, url)
        self._files.pop(port, None)

    def _arm(self) -> None:
        if self._watcher is None and self._by_port and not self._stack._closed:
            self._watcher = self._stack.loop.call_later(0.5, self._rescan)

    def _rescan(self) -> None:
        self._watcher = None
        if self._stack._closed:
            return
        for port in list(self._by_port):
            try:
                self._scan(port)
            except Exception:  # a vanished directory must not kill the loop
                logger.exception("specloop: rescanning static files for port %d", port)
        self._arm()

    def _walk(self, route: StaticRoute) -> Iterable[tuple[str, str]]:
        """(file path, decoded URL path) of each file the route could serve."""
        top = route.directory
        for dirpath, dirnames, filenames in os.walk(top, followlinks=route.follow_symlinks):
            rel = os.path.relpath(dirpath, top)
            parts = [] if rel == "." else rel.split(os.sep)
            if any(not _plain_segment(p) for p in parts):
                dirnames[:] = []
                continue
            for name in filenames:
                if _plain_segment(name):
                    yield (os.path.join(dirpath, name),
                           route.prefix + "/" + "/".join([*parts, name]))

    def _scan(self, port: int) -> None:
        seen: set[str] = set()
        known = self._files[port]
        for route in self._by_port.get(port, []):
            for path, url in self._walk(route):
                if url in seen:
                    continue
                seen.add(url)
                try:
                    st = os.stat(path) if route.follow_symlinks else os.lstat(path)
                except OSError:
                    continue
                if not stat.S_ISREG(st.st_mode) or st.st_size > route.max_file_size:
                    continue
                old = known.get(url)
                if old and (old.mtime_ns, old.size, old.ino) == (st.st_mtime_ns, st.st_size,
                                                                  st.st_ino) \
                        and old.siblings == _siblings(os.path.realpath(path)):
                    continue
                self._put(port, route, path, url, st)
        for url in [u for u in known if u not in seen]:
            self._remove(port, url)

    def _put(self, port: int, route: StaticRoute, path: str, url: str,
             st: os.stat_result) -> None:
        content_type, last_modified, _ = self._fields
        try:
            with open(path, "rb") as f:
                body = f.read(route.max_file_size + 1)
                st = os.fstat(f.fileno())
        except OSError:
            self._remove(port, url)
            return
        if len(body) != st.st_size or not stat.S_ISREG(st.st_mode):
            self._remove(port, url)  # changing under us: let aiohttp serve it
            return
        # aiohttp looks for siblings next to the file it resolved
        real = os.path.realpath(path)
        siblings = _siblings(real)
        etag = f"{st.st_mtime_ns:x}-{st.st_size:x}"
        engine = self._stack.engine
        rc = engine.static_put(port, url, body, content_type(path), etag,
                               last_modified(st.st_mtime), st.st_mtime_ns,
                               route.extra_headers, tuple(s[0] for s in siblings))
        if rc < 0:
            # over the budget (-ENOSPC) or odd: served by the app instead
            self._files[port].pop(url, None)
            return
        for encoding, *_ in siblings:
            # the sibling as aiohttp's FileResponse sends it: its own bytes
            # and validators, the original's Content-Type; one that cannot
            # be kept (size, budget, changing) is left to the app
            sib = real + _SIBLING_EXT[encoding]
            try:
                with open(sib, "rb", opener=_nofollow) as f:
                    data = f.read(route.max_file_size + 1)
                    sst = os.fstat(f.fileno())
            except OSError:
                continue
            if len(data) != sst.st_size or not stat.S_ISREG(sst.st_mode):
                continue
            engine.static_put_variant(port, url, encoding, data, content_type(path),
                                      f"{sst.st_mtime_ns:x}-{sst.st_size:x}",
                                      last_modified(sst.st_mtime), sst.st_mtime_ns,
                                      route.extra_headers)
        self._files[port][url] = _Registered(path, url, st.st_mtime_ns, st.st_size, st.st_ino,
                                             siblings)

    def _remove(self, port: int, url: str) -> None:
        if self._files.get(port, {}).pop(url, None) is not None and not self._stack._closed:
            self._stack.engine.static_remove(port, url)

    def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            self._watcher = None


# aiohttp's FileResponse: encodings and the extensions of their siblings,
# in the order it tries them
_SIBLING_EXT = {"br": ".br", "gzip": ".gz"}


def _siblings(path: str) -> tuple:
    """(encoding, mtime_ns, size, ino) of each precompressed sibling of
    ``path`` that aiohttp's FileResponse would send: regular files, not
    symlinks (it uses lstat)."""
    out = []
    for encoding, ext in _SIBLING_EXT.items():
        try:
            st = os.lstat(path + ext)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode):
            out.append((encoding, st.st_mtime_ns, st.st_size, st.st_ino))
    return tuple(out)


def _nofollow(path: str, flags: int) -> int:
    return os.open(path, flags | os.O_NOFOLLOW)


def _plain_segment(name: str) -> bool:
    """A file or directory name that is one URL path segment as it is."""
    if name in (".", "..") or not name:
        return False
    if any(c in _BAD_NAME_CHARS or c == "/" for c in name):
        return False
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # undecodable bytes from the file system
        return False
    return True
