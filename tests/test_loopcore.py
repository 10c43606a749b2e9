"""The loop core in C (specloop._core.LoopCore) against asyncio's own.

Each case runs on both cores: ``core="c"`` (call_soon, call_at, call_later,
time and _run_once in C) and ``core="asyncio"`` (asyncio's Python methods),
and must behave the same.  CPython's own asyncio tests run on both as well
(tests/test_asyncio_suite.py).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
import time

import pytest

import specloop
from specloop import _core


@pytest.fixture(params=["c", "asyncio"])
def loop(request: pytest.FixtureRequest):
    lp = specloop.new_event_loop(interface=None, core=request.param)
    yield lp
    if not lp.is_closed():
        lp.close()


def test_core_is_what_was_asked(loop: specloop.Loop) -> None:
    c_methods = type(loop).call_soon is _core.LoopCore.call_soon
    assert loop.core == ("c" if c_methods else "asyncio")
    assert f"core={loop.core}" in repr(loop)
    assert isinstance(loop, specloop.Loop)


def test_bad_core_names_the_setting() -> None:
    with pytest.raises(ValueError, match="core"):
        specloop.new_event_loop(core="rust")


def test_call_soon_is_fifo_with_args(loop: specloop.Loop) -> None:
    seen = []
    handles = [loop.call_soon(seen.append, i) for i in range(100)]
    assert all(isinstance(h, asyncio.Handle) for h in handles)
    assert all(type(h) is asyncio.Handle for h in handles)
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert seen == list(range(100))


def test_call_soon_keyword_callback_and_context(loop: specloop.Loop) -> None:
    var = contextvars.ContextVar("v", default="outer")
    seen = []
    ctx = contextvars.copy_context()
    ctx.run(var.set, "inner")
    loop.call_soon(lambda: seen.append(var.get()), context=ctx)
    loop.call_soon(lambda: seen.append(var.get()))
    loop.call_soon(callback=loop.stop)  # a keyword callback, as asyncio allows
    loop.run_forever()
    assert seen == ["inner", "outer"]


def test_cancelled_handle_does_not_run(loop: specloop.Loop) -> None:
    seen = []
    h = loop.call_soon(seen.append, 1)
    loop.call_soon(seen.append, 2)
    h.cancel()
    assert h.cancelled()
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert seen == [2]


def test_timers_fire_in_time_order(loop: specloop.Loop) -> None:
    seen = []
    now = loop.time()
    for i, d in enumerate([0.03, 0.01, 0.02, 0.01, 0.0, 0.025]):
        loop.call_at(now + d, seen.append, (d, i))
    loop.call_later(0, seen.append, "later0")
    loop.call_later(1, seen.append, "int delay")  # an int delay: not reached
    t = loop.call_at(now + 0.04, loop.stop)
    assert isinstance(t, asyncio.TimerHandle) and t.when() == now + 0.04
    loop.run_forever()
    assert [x for x in seen if isinstance(x, tuple)] == sorted(
        [(0.0, 4), (0.01, 1), (0.01, 3), (0.02, 2), (0.025, 5), (0.03, 0)],
        key=lambda x: x[0])
    assert "later0" in seen and "int delay" not in seen
    assert loop.time() >= now + 0.04


def test_many_cancelled_timers_are_purged(loop: specloop.Loop) -> None:
    seen = []
    now = loop.time()
    timers = [loop.call_at(now + 100 + i, seen.append, i) for i in range(300)]
    for t in timers[:200]:
        t.cancel()
    assert loop._timer_cancelled_count == 200
    loop.call_soon(loop.stop)
    loop.run_forever()
    # asyncio's rule: more than half of >100 cancelled -> all of them go
    assert len(loop._scheduled) == 100
    assert loop._timer_cancelled_count == 0
    assert all(not t._scheduled for t in timers[:200])
    assert all(t._scheduled for t in timers[200:])
    first = loop._scheduled[0]
    assert first is timers[200]


def test_time_is_monotonic(loop: specloop.Loop) -> None:
    a = loop.time()
    b = time.monotonic()
    c = loop.time()
    assert a <= b <= c


def test_callback_error_goes_to_the_exception_handler(loop: specloop.Loop) -> None:
    contexts = []
    loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))

    def boom(x: int) -> None:
        raise ValueError(f"bad {x}")

    h = loop.call_soon(boom, 7)
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert len(contexts) == 1
    ctx = contexts[0]
    assert ctx["handle"] is h
    assert isinstance(ctx["exception"], ValueError) and str(ctx["exception"]) == "bad 7"
    assert ctx["message"].startswith("Exception in callback ")
    assert "boom" in ctx["message"]
    assert ctx["exception"].__traceback__ is not None


def test_keyboard_interrupt_leaves_the_loop(loop: specloop.Loop) -> None:
    seen = []

    def interrupt() -> None:
        raise KeyboardInterrupt

    loop.call_soon(interrupt)
    loop.call_soon(seen.append, "after")
    with pytest.raises(KeyboardInterrupt):
        loop.run_forever()
    loop.call_soon(loop.stop)
    loop.run_forever()  # the rest of the ready queue still runs
    assert seen == ["after"]


def test_closed_loop_refuses_callbacks(loop: specloop.Loop) -> None:
    loop.close()
    with pytest.raises(RuntimeError, match="Event loop is closed"):
        loop.call_soon(print)
    with pytest.raises(RuntimeError, match="Event loop is closed"):
        loop.call_later(1, print)
    with pytest.raises(RuntimeError, match="Event loop is closed"):
        loop.call_at(1.0, print)


def test_none_when_and_delay_are_type_errors(loop: specloop.Loop) -> None:
    with pytest.raises(TypeError):
        loop.call_at(None, print)
    with pytest.raises(TypeError):
        loop.call_later(None, print)


def test_debug_mode_warns_of_slow_callbacks(loop: specloop.Loop,
                                            caplog: pytest.LogCaptureFixture) -> None:
    loop.set_debug(True)
    loop.slow_callback_duration = 0.01
    h = loop.call_soon(time.sleep, 0.02)
    assert h._source_traceback  # debug handles carry where they were made
    loop.call_soon(loop.stop)
    with caplog.at_level(logging.WARNING, logger="asyncio"):
        loop.run_forever()
    assert any("Executing <Handle" in r.getMessage() and "took" in r.getMessage()
               for r in caplog.records)
    loop.set_debug(False)


def test_call_soon_threadsafe_wakes_a_sleeping_loop(loop: specloop.Loop) -> None:
    seen = []
    t0 = loop.time()

    def other() -> None:
        time.sleep(0.05)
        loop.call_soon_threadsafe(seen.append, "from thread")
        loop.call_soon_threadsafe(loop.stop)

    th = threading.Thread(target=other)
    th.start()
    loop.call_later(10, seen.append, "timeout")  # would keep it asleep
    loop.run_forever()
    th.join(5)
    assert seen == ["from thread"]
    assert loop.time() - t0 < 5


def test_coroutines_and_tasks_run(loop: specloop.Loop) -> None:
    async def child(i: int) -> int:
        await asyncio.sleep(0.001 * (i % 3))
        return i * i

    async def main() -> list[int]:
        return await asyncio.gather(*(child(i) for i in range(50)))

    assert loop.run_until_complete(main()) == [i * i for i in range(50)]


def test_state_attributes_read_and_write_through(loop: specloop.Loop) -> None:
    assert loop._stopping is False and loop._closed is False
    loop.stop()
    assert loop._stopping is True
    loop.run_forever()  # one iteration, then the stop takes effect
    assert loop._stopping is False
    assert loop.get_debug() is False
    loop.set_debug(True)
    assert loop._debug is True and loop.get_debug() is True
    loop.set_debug(False)


def test_create_task_and_future(loop: specloop.Loop) -> None:
    var = contextvars.ContextVar("v", default="outer")

    async def read() -> str:
        return var.get()

    fut = loop.create_future()
    assert type(fut) is asyncio.Future and fut.get_loop() is loop
    ctx = contextvars.copy_context()
    ctx.run(var.set, "inner")
    t = loop.create_task(read(), name="reader", context=ctx)
    assert isinstance(t, asyncio.Task) and t.get_name() == "reader"
    assert loop.run_until_complete(t) == "inner"
    made = []

    def factory(lp, coro, **kw):
        made.append(kw)
        return asyncio.Task(coro, loop=lp, **kw)

    loop.set_task_factory(factory)
    t2 = loop.create_task(read(), name="via factory")
    assert loop.run_until_complete(t2) == "outer" and made == [{}]
    assert t2.get_name() == "via factory"
    loop.set_task_factory(None)
    coro = read()
    with pytest.raises(TypeError):
        loop.create_task(coro, bogus=1)
    coro.close()
    loop.close()
    coro = read()
    with pytest.raises(RuntimeError, match="closed"):
        loop.create_task(coro)
    coro.close()


def python_frames_during(fn) -> list[str]:
    """The Python functions that run while fn() runs (sys.setprofile)."""
    import sys
    seen: list[str] = []

    def prof(frame, event, arg):
        if event == "call":
            seen.append(f"{frame.f_code.co_filename.rsplit('/', 1)[-1]}:{frame.f_code.co_name}")
    sys.setprofile(prof)
    try:
        fn()
    finally:
        sys.setprofile(None)
    return seen


def test_futures_and_cancelled_timers_run_no_loop_python(loop: specloop.Loop) -> None:
    """C Futures ask the loop's get_debug at creation and TimerHandle.cancel
    tells _timer_handle_cancelled: on the C core both are C, as uvloop's,
    so a future or a cancelled timeout runs no Python frame of the loop's."""
    assert loop.get_debug() is False
    timer = loop.call_later(60, lambda: None)
    assert isinstance(timer, asyncio.TimerHandle)
    frames = python_frames_during(lambda: (loop.create_future(), timer.cancel()))
    loop_frames = [f for f in frames if f.startswith(("base_events.py", "events.py"))]
    if loop.core == "c":
        assert loop_frames == [], frames   # TimerHandle.cancel is C too, as uvloop's
    else:
        assert "base_events.py:get_debug" in loop_frames
    assert loop._timer_cancelled_count == 1
    assert timer.cancelled() and timer._callback is None and timer._args is None
    timer.cancel()   # once only
    assert loop._timer_cancelled_count == 1
    assert "cancelled" in repr(timer)
    loop.set_debug(True)
    assert loop.get_debug() is True and loop.create_future().get_loop() is loop
    loop.set_debug(False)


def test_async_generators_are_tracked_without_loop_python(loop: specloop.Loop) -> None:
    """run_forever's first-iteration hook is C on the C core (websockets
    starts an async generator per message); shutdown_asyncgens still finds
    and closes every generator, and one started after it still warns as
    asyncio's does."""
    import sys
    import warnings
    closed: list[int] = []

    async def gen(i: int):
        try:
            yield i
            yield i + 1
        finally:
            closed.append(i)

    async def main() -> list[str]:
        agens = [gen(i) for i in range(3)]

        def first_steps() -> None:
            for g in agens:
                try:
                    g.asend(None).send(None)   # the first step calls the hook
                except StopIteration:
                    pass
        frames = python_frames_during(first_steps)
        assert len(loop._asyncgens) == 3
        return frames

    first = loop.run_until_complete(main())
    hooks = [f for f in first if f.startswith("base_events.py")]
    if loop.core == "c":
        assert hooks == [], first
    else:
        assert "base_events.py:_asyncgen_firstiter_hook" in hooks
    loop.run_until_complete(loop.shutdown_asyncgens())
    assert sorted(closed) == [0, 1, 2]

    late = gen(9)

    async def start_late() -> None:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert await late.asend(None) == 9
        assert any(issubclass(w.category, ResourceWarning) and "shutdown_asyncgens" in
                   str(w.message) for w in caught), caught
    loop.run_until_complete(start_late())
    loop.run_until_complete(late.aclose())
    assert sys.get_asyncgen_hooks().firstiter is None
