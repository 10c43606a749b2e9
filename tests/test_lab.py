"""The namespace lab: idempotent up/down, addresses, offloads, isolation."""

from __future__ import annotations

import subprocess

import pytest

from specloop import netlab

from labtools import run_client

pytestmark = pytest.mark.lab


def _ethtool_features(ns: str, ifname: str) -> dict[str, str]:
    out = subprocess.run(netlab.in_ns(ns, "ethtool", "-k", ifname),
                         capture_output=True, text=True, check=True).stdout
    feats = {}
    for line in out.splitlines()[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            feats[k.strip()] = v.split()[0] if v.split() else ""
    return feats


def test_up_is_idempotent_and_complete(lab):
    again = netlab.up()
    assert again == lab
    st = netlab.status()
    assert st["up"] is True
    srv = st["namespaces"][netlab.SERVER_NS]["link"]
    cli = st["namespaces"][netlab.CLIENT_NS]["link"]
    assert srv["addresses"] == ["10.55.0.2"] and cli["addresses"] == ["10.55.0.1"]
    assert srv["mtu"] == cli["mtu"] == 1500
    assert srv["state"] == cli["state"] == "UP"


def test_client_offloads_are_off(lab):
    feats = _ethtool_features(lab.client_ns, lab.client_if)
    assert feats["tx-checksumming"] == "off"
    assert feats["tcp-segmentation-offload"] == "off"
    assert feats["generic-segmentation-offload"] == "off"


def test_root_namespace_has_no_route_to_the_lab(lab):
    routes = subprocess.run(["ip", "-4", "route", "show", "table", "all"],
                            capture_output=True, text=True, check=True).stdout
    addrs = subprocess.run(["ip", "-4", "addr"], capture_output=True, text=True,
                           check=True).stdout
    assert "10.55.0." not in routes and "10.55.0." not in addrs
    assert netlab.interface_info(lab.server_if) is None


def test_namespaces_reach_each_other(lab):
    r = run_client("ping", "-c", "1", "-W", "2", lab.server_ip)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("percent, answered", [(0, True), (100, False)])
def test_loss_extremes(lab, percent, answered):
    """netlab.loss at its ends: nothing lost, everything lost; its table
    is gone afterwards either way."""
    with netlab.loss(percent):
        r = run_client("ping", "-c", "1", "-W", "1", lab.server_ip)
    assert (r.returncode == 0) == answered, r.stdout
    tables = run_client("nft", "list", "tables").stdout
    assert "sltest" not in tables


@pytest.mark.parametrize("percent", [-1, 101, 5.0])
def test_loss_bad_percent(percent):
    with pytest.raises(ValueError, match="percent"):
        with netlab.loss(percent):
            pass


def test_down_removes_everything_and_up_rebuilds(lab):
    netlab.down()
    netlab.down()  # idempotent
    st = netlab.status()
    assert st["up"] is False
    assert st["namespaces"] == {netlab.SERVER_NS: None, netlab.CLIENT_NS: None}
    links = subprocess.run(["ip", "link"], capture_output=True, text=True).stdout
    assert netlab.SERVER_IF not in links and netlab.CLIENT_IF not in links
    netlab.up()
    assert netlab.is_up()


def test_queue_count(lab):
    try:
        built = netlab.up(queues=2)
        assert built.queues == 2
        assert netlab.status()["namespaces"][netlab.SERVER_NS]["link"]["queues"] == 2
    finally:
        netlab.up(queues=1)
    assert netlab.status()["namespaces"][netlab.SERVER_NS]["link"]["queues"] == 1


@pytest.mark.parametrize("kw", [{"queues": 0}, {"queues": "2"}, {"mtu": 100}])
def test_bad_lab_arguments(kw):
    with pytest.raises(ValueError, match=next(iter(kw))):
        netlab.up(**kw)


def test_cli_lab_status(lab):
    import sys
    r = subprocess.run([sys.executable, "-m", "specloop", "lab", "status"],
                       capture_output=True, text=True)
    assert r.returncode == 0 and "lab is up" in r.stdout
