/* SPDX-License-Identifier: MIT */
/*
 * pycore.h - specloop._core, the loop core in C (CPython C API).
 *
 * Three types, one file each:
 *   LoopCore       (loopcore.c)   the base of specloop.Loop: call_soon,
 *                                 call_at, call_later, time and _run_once
 *                                 in C, on asyncio's own Handle objects
 *   Pump           (pump.c)       one engine in the loop: waits in C on the
 *                                 engine's and the selector's fds, runs RX,
 *                                 the fast path, TCP timers and TX there,
 *                                 and dispatches engine events to transports
 *   TransportCore  (transport.c)  the base of BypassTransport (a subclass of
 *                                 asyncio's _FlowControlMixin made at import):
 *                                 write() and delivery to the protocol in C
 *
 * No global state: what the module looks up once (asyncio's types, slot
 * offsets, interned names) is its module state, reached from each object
 * through a pointer it keeps.
 */
#ifndef SPECLOOP_PYCORE_H
#define SPECLOOP_PYCORE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdbool.h>
#include <stdint.h>

#include "specloop.h"

#define CORE_MAX_BASE_SLOTS 8

struct core_state {
	PyTypeObject *loop_type;
	PyTypeObject *pump_type;
	PyTypeObject *transport_type;	/* NULL until make_transport_type() */

	/* asyncio.events.Handle / TimerHandle and where their slots live */
	PyTypeObject *handle_type;
	PyTypeObject *timer_type;
	PyTypeObject *ctimer_type;	/* its subclass with cancel() in C (loopcore.c) */
	Py_ssize_t h_callback, h_args, h_cancelled, h_loop, h_source_tb, h_repr, h_context;
	Py_ssize_t t_when, t_scheduled;

	/* asyncio.BaseEventLoop's Python methods, for debug mode and odd calls */
	PyObject *base_call_soon, *base_call_at, *base_call_later, *base_call_soon_internal;
	PyObject *base_create_task, *base_asyncgen_firstiter;
	PyObject *future_type, *task_type;	/* asyncio.Future, asyncio.Task */
	PyObject *kw_loop, *kw_task;		/* ("loop",), ("loop", "name", "context") */
	/* Python helpers given by specloop.loop through configure() */
	PyObject *report_error;		/* (handle, exc): Handle._run's except branch */
	PyObject *log_slow;		/* (handle, seconds): debug slow-callback warning */

	/* TransportCore's base (asyncio's _FlowControlMixin): its object slots */
	Py_ssize_t base_slots[CORE_MAX_BASE_SLOTS];
	int nbase_slots;
	Py_ssize_t tc_offset;		/* where struct tcore starts in an instance */

	/* interned attribute names */
	PyObject *s_run, *s_select, *s_process_events, *s_selector, *s_current_handle;
	PyObject *s_append, *s_popleft, *s_data_received, *s_get_buffer, *s_buffer_updated;
	PyObject *s_fatal_error, *s_eof_received, *s_write_ready, *s_closed_event;
	PyObject *s_returned_event;
	PyObject *s_accept, *s_write_more, *s_write_lost, *s_context, *s_callback;
	PyObject *s_release_held, *s_name, *s_task_factory;
	PyObject *s_asyncgens, *s_asyncgens_shutdown_called, *s_add;
};

/* loopcore.c */
int loopcore_init_type(PyObject *module, struct core_state *st);
int loopcore_init_timer_type(PyObject *module, struct core_state *st);

/* pump.c */
struct pump;
int pump_init_type(PyObject *module, struct core_state *st);
/* The loop's I/O step: waits up to timeout seconds (< 0: no limit) for the
 * engine or the selector.  Returns 1 if the selector has ready fds, 0 if
 * not, -1 with an exception set. */
int pump_wait(struct pump *p, double timeout);
/* Dispatches the engine events the wait left (0, or -1 with an exception:
 * the rest stay for the next call). */
int pump_dispatch(struct pump *p);
bool pump_has_events(const struct pump *p);
/* End of an iteration: TX of what it wrote, frames recycled. */
int pump_flush(struct pump *p);
bool pump_is(PyObject *o, struct core_state *st);
/* sl_conn_write on this pump's engine: bytes taken, or -errno (-EBADF
 * once the engine is closed). */
int pump_conn_write(PyObject *pump, uint32_t conn, const void *buf, size_t len);
int pump_conn_setopt(PyObject *pump, uint32_t conn, int opt, int value);

/* transport.c */
int transport_init(PyObject *module, struct core_state *st);
/* In-order bytes of an engine DATA event for this transport (0, or -1 with
 * SystemExit/KeyboardInterrupt set: everything else went to _fatal_error). */
int transport_deliver(struct core_state *st, PyObject *tr, const uint8_t *data, size_t len);
/* An EOF event (0 or -1 as above). */
int transport_eof(struct core_state *st, PyObject *tr);
bool transport_is(struct core_state *st, PyObject *o);
uint32_t transport_conn(struct core_state *st, PyObject *tr);

/* module.c */
PyModuleDef *core_module_def(void);
struct core_state *core_state_of(PyObject *module);
/* Calls func(self, *args, **kw) for a vectorcall's arguments. */
PyObject *core_call_with_self(PyObject *func, PyObject *self, PyObject *const *args,
			      size_t nargsf, PyObject *kwnames);
/* The result of a call into our own Python glue: 0 when it returned (the
 * result is dropped); -1 for SystemExit/KeyboardInterrupt (they go up);
 * anything else is a bug of ours: reported as unraisable on `where`, 0. */
int core_glue_done(PyObject *result, PyObject *where);
uint64_t core_monotonic_us(void);
double core_monotonic(void);

#endif /* SPECLOOP_PYCORE_H */
