"""Fixtures: the lab (root + namespaces) and loops on either path.

Lab tests skip, saying why, when not run as root; ``make test`` passes
``--require-lab`` so that in CI a missing lab is a failure, never a skip.
"""

from __future__ import annotations

import asyncio
import os
from typing import Iterator

import pytest

import specloop
from specloop import netlab


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--require-lab", action="store_true",
                     help="fail (instead of skip) when the lab cannot be built")
    parser.addoption("--run-slow", action="store_true",
                     help="also run tests marked slow (soak, long fuzz)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--run-slow"):
        return
    skip = pytest.mark.skip(reason="slow test: run with --run-slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def lab(request: pytest.FixtureRequest) -> Iterator[netlab.Lab]:
    """The slsrv/slcli lab, built once per session."""
    reason = None
    if os.geteuid() != 0:
        reason = "lab tests need root (network namespaces, XDP, AF_XDP)"
    if reason:
        if request.config.getoption("--require-lab"):
            pytest.fail(f"--require-lab: {reason}")
        pytest.skip(reason)
    was_up = netlab.is_up()
    lab = netlab.up()
    yield lab
    if not was_up:  # leave the machine as we found it
        netlab.down()


@pytest.fixture
def bypass_loop(lab: netlab.Lab) -> Iterator[specloop.Loop]:
    """A specloop loop whose engine sits on sl-srv0 in slsrv."""
    with netlab.inside(lab.server_ns):
        loop = specloop.new_event_loop(interface=lab.server_if)
    yield loop
    loop.close()


@pytest.fixture(params=["kernel", "bypass"])
def path(request: pytest.FixtureRequest) -> str:
    """Which path serves: asyncio's kernel sockets or specloop's bypass."""
    return request.param


@pytest.fixture
def in_server_ns(lab: netlab.Lab) -> Iterator[netlab.Lab]:
    """The test runs inside the server namespace, as a server process
    would; its clients run in the client namespace."""
    with netlab.inside(lab.server_ns):
        yield lab


@pytest.fixture
def serve_loop(path: str, in_server_ns: netlab.Lab) -> Iterator[specloop.Loop]:
    """A specloop loop serving on ``path``: bypass on sl-srv0, or kernel."""
    loop = specloop.new_event_loop(
        interface=in_server_ns.server_if if path == "bypass" else None)
    asyncio.set_event_loop(loop)
    try:
        yield loop
    finally:
        try:
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for t in pending:
                t.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            asyncio.set_event_loop(None)
            loop.close()


@pytest.fixture
def kernel_loop() -> Iterator[specloop.Loop]:
    """A specloop loop with no interface: asyncio's selector loop."""
    loop = specloop.new_event_loop(interface=None)
    yield loop
    loop.close()


@pytest.fixture
def gso_loop(in_server_ns: netlab.Lab) -> Iterator[specloop.Loop]:
    """A bypass loop with GSO super-frames forced on, current for the test."""
    loop = specloop.new_event_loop(interface=in_server_ns.server_if, tx_gso="on")
    asyncio.set_event_loop(loop)
    try:
        yield loop
    finally:
        asyncio.set_event_loop(None)
        loop.close()
