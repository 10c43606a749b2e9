"""The specloop event loop: asyncio's selector loop plus the bypass.

Without an interface configured this *is* ``asyncio.SelectorEventLoop``:
nothing is overridden that changes behaviour.  With one, the loop owns a
:class:`~specloop.stack.Stack` (one native engine), created with the loop
and closed with it, and every iteration ends with one TX kick.
"""

from __future__ import annotations

import asyncio
import selectors
from typing import Any

from .config import Config
from .stack import Stack

__all__ = ["Loop"]


class Loop(asyncio.SelectorEventLoop):
    """An asyncio event loop whose sockets on ``interface`` bypass the kernel.

    Settings are keyword arguments (see :class:`specloop.config.Config`);
    those not given come from ``SPECLOOP_*`` environment variables.
    """

    # Seen by BaseEventLoop.__del__ when __init__ raised before asyncio's
    # own __init__ ran (a bad setting): such a loop was never open.
    _closed = True
    _stack: Stack | None = None

    def __init__(self, selector: selectors.BaseSelector | None = None, *,
                 config: Config | None = None, **settings: Any) -> None:
        if config is not None and settings:
            raise TypeError("specloop.Loop: pass either config= or settings, not both")
        cfg = config if config is not None else Config.resolve(settings)
        super().__init__(selector)
        self._specloop_config = cfg
        self._stack: Stack | None = None
        if cfg.bypass:
            try:
                self._stack = Stack(self, cfg)
            except BaseException:
                super().close()
                raise

    @property
    def config(self) -> Config:
        """The loop's resolved settings."""
        return self._specloop_config

    @property
    def stack(self) -> Stack | None:
        """The bypass (engine, counters), or None on a kernel-only loop."""
        return self._stack

    def _run_once(self) -> None:
        super()._run_once()
        stack = self._stack
        if stack is not None:
            stack.end_of_iteration()

    def close(self) -> None:
        if self.is_running():
            raise RuntimeError("Cannot close a running event loop")
        stack, self._stack = self._stack, None
        try:
            if stack is not None and not self.is_closed():
                stack.close()
        finally:
            super().close()

    def __repr__(self) -> str:
        bypass = f" bypass={self._stack!r}" if self._stack is not None else ""
        return (f"<specloop.Loop running={self.is_running()} "
                f"closed={self.is_closed()}{bypass}>")
