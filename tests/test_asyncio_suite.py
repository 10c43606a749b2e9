"""CPython's own asyncio tests, bound to specloop's loop.

As uvloop does, the test mixins of ``test.test_asyncio`` are bound to a
loop factory: here ``specloop.Loop`` without an interface (asyncio's
selector loop must be what it is) and, with the lab, a loop whose bypass is
up on sl-srv0 (everything these tests do is on 127.0.0.1 or pipes, which
must stay on the kernel path untouched).  Both on specloop's C loop core
(the default) and on ``core="asyncio"`` (asyncio's Python methods, with the
engine's wait as the selector).
"""

from __future__ import annotations

import asyncio
import unittest

import pytest

import specloop
from specloop import netlab

try:
    from test.test_asyncio import test_events, test_sendfile, test_server
    from test.test_asyncio import test_sock_lowlevel, test_streams, test_subprocess
    from test.test_asyncio import utils as test_utils
except ImportError:  # pragma: no cover - a Python without its test package
    pytest.skip("this Python has no test.test_asyncio package", allow_module_level=True)


def _kernel_loop() -> specloop.Loop:
    return specloop.Loop(interface=None)


def _bypass_loop(core: str = "c") -> specloop.Loop:
    return specloop.Loop(interface=netlab.SERVER_IF, core=core)


class _InServerNamespace:
    """Runs the whole test inside slsrv, as a deployed server process would
    be: its 127.0.0.1 clients then reach the servers it makes."""

    def setUp(self):
        self._ns = netlab.inside(netlab.SERVER_NS)
        self._ns.__enter__()
        super().setUp()

    def tearDown(self):
        try:
            super().tearDown()
        finally:
            self._ns.__exit__(None, None, None)


class _Watcher:
    def setUp(self):
        super().setUp()
        watcher = asyncio.ThreadedChildWatcher()
        watcher.attach_loop(self.loop)
        asyncio.set_child_watcher(watcher)

    def tearDown(self):
        asyncio.set_child_watcher(None)
        super().tearDown()


class TestSpecloopEvents(_Watcher, test_events.EventLoopTestsMixin,
                         test_events.SubprocessTestsMixin, test_utils.TestCase):
    def create_event_loop(self):
        return _kernel_loop()


class TestSpecloopSockLowlevel(test_sock_lowlevel.BaseSockTestsMixin, test_utils.TestCase):
    def create_event_loop(self):
        return _kernel_loop()


class TestSpecloopSendfile(test_sendfile.SendfileTestsBase, test_utils.TestCase):
    def create_event_loop(self):
        return _kernel_loop()


class TestSpecloopStartServer(test_server.BaseStartServer, unittest.TestCase):
    def new_loop(self):
        return _kernel_loop()


class TestSpecloopSubprocess(_Watcher, test_subprocess.SubprocessMixin, test_utils.TestCase):
    def setUp(self):
        super(_Watcher, self).setUp()
        self.loop = _kernel_loop()
        self.set_event_loop(self.loop)
        watcher = asyncio.ThreadedChildWatcher()
        watcher.attach_loop(self.loop)
        asyncio.set_child_watcher(watcher)


@pytest.mark.usefixtures("lab")
class TestSpecloopEventsWithBypassUp(_InServerNamespace, _Watcher, test_events.EventLoopTestsMixin,
                                     test_events.SubprocessTestsMixin, test_utils.TestCase):
    def create_event_loop(self):
        # A few tests make a second loop while setUp's is open.  One interface
        # queue carries one engine (a second is refused with EBUSY, see
        # test_engine.py), so that second loop is a kernel-only one.
        loop = getattr(self, "loop", None)
        if loop is not None and not loop.is_closed() and loop.stack is not None:
            return _kernel_loop()
        return _bypass_loop()


@pytest.mark.usefixtures("lab")
class TestSpecloopSendfileWithBypassUp(_InServerNamespace, test_sendfile.SendfileTestsBase, test_utils.TestCase):
    def create_event_loop(self):
        return _bypass_loop()


class TestAsyncioCoreEvents(_Watcher, test_events.EventLoopTestsMixin,
                            test_events.SubprocessTestsMixin, test_utils.TestCase):
    def create_event_loop(self):
        return specloop.Loop(interface=None, core="asyncio")


@pytest.mark.usefixtures("lab")
class TestAsyncioCoreEventsWithBypassUp(_InServerNamespace, _Watcher,
                                        test_events.EventLoopTestsMixin,
                                        test_events.SubprocessTestsMixin, test_utils.TestCase):
    def create_event_loop(self):
        loop = getattr(self, "loop", None)
        if loop is not None and not loop.is_closed() and loop.stack is not None:
            return specloop.Loop(interface=None, core="asyncio")
        return _bypass_loop("asyncio")
