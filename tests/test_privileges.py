"""Asking for the bypass where it cannot run gives an exception that says
exactly what is missing, never a crash and never a silent kernel fallback;
``specloop doctor`` reports the same and exits non-zero."""

from __future__ import annotations

import errno
import subprocess
import sys

import pytest

import specloop
from specloop import netlab

pytestmark = pytest.mark.lab

TRY_BYPASS = """
import specloop
try:
    loop = specloop.new_event_loop(interface=%r)
except specloop.BypassUnavailableError as exc:
    print("ERR", exc.errno, exc)
else:
    print("OPENED", loop.stack)
""" % netlab.SERVER_IF


def _in_server_ns_with_caps_dropped(drop: str, code: str) -> subprocess.CompletedProcess:
    # ip netns exec needs its privileges; capsh drops ours for the child only
    return subprocess.run(
        netlab.in_ns(netlab.SERVER_NS, "capsh", f"--drop={drop}", "--",
                     "-c", f'exec {sys.executable} -c "$0"', code),
        capture_output=True, text=True, timeout=60)


def test_missing_interface_is_named(lab):
    # sl-srv0 lives in slsrv, not here
    with pytest.raises(specloop.BypassUnavailableError) as info:
        specloop.new_event_loop(interface=netlab.SERVER_IF)
    assert info.value.errno == errno.ENODEV
    assert f"{netlab.SERVER_IF!r} not found in this network namespace" in str(info.value)


def test_missing_capabilities_are_named(lab):
    r = _in_server_ns_with_caps_dropped("cap_net_admin,cap_net_raw,cap_bpf,cap_sys_admin",
                                        TRY_BYPASS)
    assert r.stdout.startswith("ERR 1 "), r.stdout + r.stderr
    for cap in ("CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_BPF"):
        assert cap in r.stdout


def test_missing_bpf_capability_alone_is_named(lab):
    r = _in_server_ns_with_caps_dropped("cap_bpf,cap_sys_admin", TRY_BYPASS)
    assert r.stdout.startswith("ERR 1 "), r.stdout + r.stderr
    assert "CAP_BPF" in r.stdout and "CAP_NET_ADMIN" not in r.stdout.split("fix")[0]


def test_unprivileged_user(lab):
    r = subprocess.run(
        netlab.in_ns(netlab.SERVER_NS, "setpriv", "--reuid=65534", "--regid=65534",
                     "--clear-groups", "--inh-caps=-all", sys.executable, "-c", TRY_BYPASS),
        capture_output=True, text=True, timeout=60)
    assert r.stdout.startswith("ERR 1 "), r.stdout + r.stderr
    assert "CAP_NET_ADMIN" in r.stdout


def test_doctor_passes_in_the_lab(lab):
    r = subprocess.run([sys.executable, "-m", "specloop", "doctor", "--netns", netlab.SERVER_NS,
                        "--interface", netlab.SERVER_IF], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "MISSING" not in r.stdout
    assert "XDP native mode" in r.stdout and "XDP generic mode" in r.stdout
    # the lab's server veth takes GSO super-frames (tx_gso)
    gso = [line for line in r.stdout.splitlines() if "GSO super-frames" in line]
    assert len(gso) == 1 and gso[0].startswith("ok") and netlab.SERVER_IF in gso[0], r.stdout


def test_doctor_names_what_is_missing(lab):
    r = _in_server_ns_with_caps_dropped(
        "cap_net_admin,cap_net_raw,cap_bpf,cap_sys_admin",
        "import sys; from specloop.cli import main; "
        f"sys.exit(main(['doctor', '--interface', {netlab.SERVER_IF!r}]))")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "MISSING privileges" in r.stdout and "CAP_NET_ADMIN" in r.stdout
    assert "fix:" in r.stdout


def test_doctor_without_the_interface(lab):
    r = subprocess.run([sys.executable, "-m", "specloop", "doctor", "--interface", "nope0"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert "MISSING interface" in r.stdout and "'nope0' not found" in r.stdout
