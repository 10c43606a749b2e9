"""specloop: an asyncio event loop with its own TCP over AF_XDP.

Use it as uvloop::

    import specloop
    specloop.run(main(), interface="sl-srv0")

or ``specloop.install(interface=...)`` before code that calls
``asyncio.run``.  Without an interface it is asyncio's selector loop.
"""

from __future__ import annotations

import asyncio as __asyncio
import sys as __sys
import warnings as __warnings
from typing import Any as _Any, Awaitable as _Awaitable, TypeVar as _TypeVar

from .config import Config
from .engine import BypassUnavailableError
from .loop import Loop, building_bypass as _building_bypass

__all__ = ["Loop", "Config", "BypassUnavailableError", "new_event_loop", "run",
           "install", "EventLoopPolicy"]
__version__ = "0.1.0"

_T = _TypeVar("_T")
_SelectorEventLoop = __asyncio.SelectorEventLoop


def new_event_loop(**settings: _Any) -> Loop:
    """A new specloop :class:`Loop` with these settings."""
    return Loop(**settings)


def run(main: _Awaitable[_T], *, debug: bool | None = None, **settings: _Any) -> _T:
    """Runs a coroutine on a new specloop loop, as ``asyncio.run`` does."""
    try:
        config = Config.resolve(settings)
    except BaseException:
        close = getattr(main, "close", None)
        if close is not None:  # as asyncio.run, leave no un-awaited coroutine
            close()
        raise

    def factory() -> Loop:
        return Loop(config=config)

    with __asyncio.Runner(loop_factory=factory, debug=debug) as runner:
        return runner.run(main)  # type: ignore[arg-type]


def _warn_policy(name: str) -> None:
    # Python deprecates event loop policies in 3.14; we follow it.
    if __sys.version_info >= (3, 14):
        __warnings.warn(f"specloop.{name} is deprecated as asyncio's policies are; "
                        "use specloop.run()", DeprecationWarning, stacklevel=3)


class EventLoopPolicy(__asyncio.DefaultEventLoopPolicy):
    """A policy whose loops are specloop loops with these settings."""

    def __init__(self, **settings: _Any) -> None:
        _warn_policy("EventLoopPolicy")
        super().__init__()
        self._specloop_config = Config.resolve(settings)

    def new_event_loop(self) -> _Any:  # type: ignore[override]
        if _building_bypass():
            # a library making its own loop while we build a bypass (pyroute2)
            return _SelectorEventLoop()
        return Loop(config=self._specloop_config)

    def __repr__(self) -> str:
        return f"<specloop.EventLoopPolicy interface={self._specloop_config.interface!r}>"


def install(**settings: _Any) -> None:
    """Makes specloop the event loop of ``asyncio.run`` and friends."""
    _warn_policy("install")
    __asyncio.set_event_loop_policy(EventLoopPolicy(**settings))
