"""The benchmark's steal guard (benchmarks/suite.py ``least_stolen``): a
cell measured while other guests of the host took a CPU is measured again,
and the least stolen measurement is kept and reported with the ones set
aside.  The host's steal cannot be ordered here, so the measurements are
records as ``_measure_cell_once`` makes them; the lab run of the whole
suite is tests/test_bench_smoke.py."""

from __future__ import annotations

from typing import Any, Callable

from benchmarks import report, suite


def _records(*cells: tuple[str, float, float]) -> tuple[Callable[[], dict[str, Any]], list[float]]:
    """A measure() giving (status, steal on the server's CPU, req/s) in turn."""
    it = iter(cells)
    made: list[float] = []

    def measure() -> dict[str, Any]:
        status, steal, rps = next(it)
        made.append(rps)
        rec: dict[str, Any] = {"status": status, "requests_per_s": rps}
        if status == "ok":
            rec["diag"] = {"steal_pct": [0.4, steal]}
        else:
            rec["reason"] = "client failed"
        return rec
    return measure, made


def test_a_quiet_measurement_is_kept_as_it_is() -> None:
    measure, made = _records(("ok", 2.0, 100.0), ("ok", 0.0, 999.0))
    rec = suite.least_stolen(measure, 5.0, 2, "requests_per_s")
    assert made == [100.0] and rec["requests_per_s"] == 100.0
    assert "steal_discarded" not in rec


def test_a_stolen_measurement_is_made_again_until_quiet() -> None:
    measure, made = _records(("ok", 30.0, 100.0), ("ok", 12.0, 200.0), ("ok", 3.0, 300.0))
    rec = suite.least_stolen(measure, 5.0, 2, "requests_per_s")
    assert made == [100.0, 200.0, 300.0]
    assert rec["requests_per_s"] == 300.0
    assert rec["steal_discarded"] == [
        {"requests_per_s": 100.0, "steal_pct": [0.4, 30.0]},
        {"requests_per_s": 200.0, "steal_pct": [0.4, 12.0]}]


def test_retries_are_bounded_and_the_least_stolen_wins() -> None:
    measure, made = _records(("ok", 30.0, 100.0), ("ok", 9.0, 200.0), ("ok", 20.0, 300.0),
                             ("ok", 0.0, 400.0))
    rec = suite.least_stolen(measure, 5.0, 2, "requests_per_s")
    assert made == [100.0, 200.0, 300.0]          # 1 + 2 retries, not a fourth
    assert rec["requests_per_s"] == 200.0
    assert [d["requests_per_s"] for d in rec["steal_discarded"]] == [100.0, 300.0]


def test_the_client_cpu_counts_too() -> None:
    def measure() -> dict[str, Any]:
        return {"status": "ok", "requests_per_s": 1.0, "diag": {"steal_pct": [40.0, 0.0]}}
    calls = []
    rec = suite.least_stolen(lambda: calls.append(1) or measure(), 5.0, 1, "requests_per_s")
    assert len(calls) == 2 and suite.steal_pct(rec) == 40.0


def test_off_and_failures_are_returned_at_once() -> None:
    measure, made = _records(("ok", 50.0, 100.0))
    assert suite.least_stolen(measure, 0.0, 2, "requests_per_s")["requests_per_s"] == 100.0
    assert made == [100.0]
    measure, made = _records(("ok", 50.0, 100.0), ("failed", 0.0, 0.0), ("ok", 0.0, 300.0))
    rec = suite.least_stolen(measure, 5.0, 2, "requests_per_s")
    assert rec["status"] == "failed" and made == [100.0, 0.0]


def test_a_record_without_readings_counts_as_unstolen() -> None:
    assert suite.steal_pct({"status": "ok"}) == 0.0
    assert suite.steal_pct({"status": "ok", "diag": {}}) == 0.0


def test_the_report_says_what_was_set_aside() -> None:
    measure, _ = _records(("ok", 30.0, 100.0), ("ok", 1.0, 300.0))
    rec = suite.least_stolen(measure, 5.0, 2, "requests_per_s")
    run = suite._run_summary(dict(rec, cpu_us_per_request={"server": 1, "client": 1},
                                  cpu_pct={"client": 50}, latency_us={"p50": 1, "p99": 2}),
                             "requests_per_s")
    assert run["steal_discarded"] == rec["steal_discarded"]
    assert report._discarded(run, "requests_per_s") == \
        "measured again after 100 req/s at 0.4/30 % steal"
    cell = suite.aggregate([dict(rec, cpu_us_per_request={"server": 1, "client": 1},
                                 cpu_pct={"client": 50}, latency_us={"p50": 1, "p99": 2})],
                           "requests_per_s")
    assert cell["steal_remeasured"] == 1 and "steal_discarded" not in cell
    line = report._steal_line({"settings": {"max_steal_pct": 5.0, "steal_retries": 2},
                               "results": [cell], "bulk": []})
    assert len(line) == 1 and "1 extra measurements for 1 measured" in line[0]
    assert report._steal_line({"settings": {"max_steal_pct": 0.0}, "results": [cell]}) == []
