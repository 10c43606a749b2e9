"""Settings: keyword arguments win over SPECLOOP_* variables; every bad value
raises ValueError naming the setting and what is allowed."""

from __future__ import annotations

import asyncio

import pytest

import specloop
from specloop.config import Config


def test_defaults_mean_kernel_only():
    cfg = Config.resolve({}, environ={})
    assert cfg.interface is None and not cfg.bypass
    assert cfg.xdp_mode == "auto" and cfg.frame_size == 4096


def test_environment_is_read():
    cfg = Config.resolve({}, environ={"SPECLOOP_INTERFACE": "eth7",
                                      "SPECLOOP_FRAME_COUNT": "8192",
                                      "SPECLOOP_XDP_MODE": "generic",
                                      "SPECLOOP_TIME_WAIT": "2.5"})
    assert (cfg.interface, cfg.frame_count, cfg.xdp_mode, cfg.time_wait) == \
        ("eth7", 8192, "generic", 2.5)


def test_arguments_win_over_environment():
    cfg = Config.resolve({"interface": "eth1", "queue": 3},
                         environ={"SPECLOOP_INTERFACE": "eth7", "SPECLOOP_QUEUE": "1"})
    assert cfg.interface == "eth1" and cfg.queue == (3,)


def test_queues():
    env = {}
    assert Config.resolve({}, environ=env).queue == "all"
    assert Config.resolve({"queue": 2}, environ=env).queue == (2,)
    assert Config.resolve({"queue": "0, 3"}, environ=env).queue == (0, 3)
    assert Config.resolve({}, environ={"SPECLOOP_QUEUE": "1,2"}).queue == (1, 2)


def test_empty_interface_means_none():
    assert Config.resolve({"interface": ""}, environ={}).interface is None
    assert Config.resolve({"interface": None},
                          environ={"SPECLOOP_INTERFACE": "eth0"}).interface is None


@pytest.mark.parametrize("name,value,allowed", [
    ("xdp_mode", "turbo", "auto, native, generic"),
    ("frame_size", 3000, "2048, 4096"),
    ("frame_size", "big", "integer"),
    ("frame_count", 10, "256"),
    ("ring_size", 1000, "power of two"),
    ("ring_size", 32, "from 64"),
    ("queue", -1, "from 0 to 63"),
    ("queue", "0,0", "distinct"),
    ("queue", "a", "'all'"),
    ("queue", list(range(17)), "up to 16"),
    ("busy_poll_us", -5, "from 0"),
    ("adaptive_poll_us", -1, "from 0"),
    ("max_conns", 1.5, "integer"),
    ("sndbuf", True, "integer"),
    ("time_wait", "soon", "number of seconds"),
    ("time_wait", -1, "between 0 and 86400"),
    ("interface", "a/b", "interface name"),
    ("interface", "x" * 20, "interface name"),
    ("interface", 7, "string"),
])
def test_bad_argument_names_setting_and_rule(name, value, allowed):
    with pytest.raises(ValueError) as info:
        Config.resolve({name: value}, environ={})
    msg = str(info.value)
    assert name in msg and allowed in msg


def test_bad_environment_value_names_variable():
    with pytest.raises(ValueError) as info:
        Config.resolve({}, environ={"SPECLOOP_FRAME_SIZE": "1234"})
    assert "SPECLOOP_FRAME_SIZE" in str(info.value) and "2048, 4096" in str(info.value)


def test_frame_count_must_cover_rings():
    with pytest.raises(ValueError, match="frame_count=512 is too small for ring_size=2048"):
        Config.resolve({"frame_count": 512}, environ={})


def test_rto_bounds():
    with pytest.raises(ValueError, match="rto_min"):
        Config.resolve({"rto_min": 5, "rto_max": 1}, environ={})


def test_unknown_setting_is_a_type_error():
    with pytest.raises(TypeError, match="colour"):
        specloop.new_event_loop(colour="blue")


def test_bad_value_through_every_entry_point(monkeypatch):
    with pytest.raises(ValueError, match="xdp_mode"):
        specloop.new_event_loop(xdp_mode="x")
    with pytest.raises(ValueError, match="xdp_mode"):
        specloop.EventLoopPolicy(xdp_mode="x")
    with pytest.raises(ValueError, match="xdp_mode"):
        specloop.install(xdp_mode="x")
    with pytest.raises(ValueError, match="xdp_mode"):
        specloop.run(asyncio.sleep(0), xdp_mode="x")
    monkeypatch.setenv("SPECLOOP_RING_SIZE", "100")
    with pytest.raises(ValueError, match="SPECLOOP_RING_SIZE"):
        specloop.new_event_loop()


def test_run_uses_environment(monkeypatch):
    monkeypatch.setenv("SPECLOOP_INTERFACE", "")

    async def main():
        return asyncio.get_running_loop()

    loop = specloop.run(main())
    assert isinstance(loop, specloop.Loop) and loop.stack is None and loop.is_closed()
