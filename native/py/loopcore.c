/* SPDX-License-Identifier: MIT */
/*
 * loopcore.c - LoopCore, the C base of specloop.Loop.
 *
 * specloop.Loop is `class Loop(LoopCore, asyncio.SelectorEventLoop)`: the
 * methods here come first in its MRO and replace asyncio.BaseEventLoop's
 * Python ones with the same behaviour: call_soon, _call_soon, call_at,
 * call_later, time and _run_once.  They work on asyncio's own objects:
 * events.Handle and TimerHandle instances (their slots written and read at
 * the offsets asyncio's classes give them), the _ready deque and the
 * _scheduled heap list, so every Python method of BaseEventLoop that touches
 * them (close, _timer_handle_cancelled, run_forever, the debug paths) keeps
 * working unchanged.  The loop's state attributes that the hot path reads
 * (_ready, _scheduled, _stopping, _closed, _debug, _timer_cancelled_count,
 * _clock_resolution) are C fields behind data descriptors, so Python code
 * that assigns them (BaseEventLoop.__init__, stop, close, set_debug) writes
 * the fields.
 *
 * In debug mode the Python methods run instead (asyncio's checks, source
 * tracebacks, slow-callback warnings), except that _run_once keeps its C
 * loop and calls each handle's own _run.
 *
 * With an engine attached (_core_attach), the I/O step of _run_once is the
 * Pump's wait (pump.c): it blocks in C on the engine and the selector,
 * handles fast-path traffic and TCP timers there, and comes back only when
 * Python has work; every iteration ends with one engine flush.
 */
#include "pycore.h"

#include <math.h>
#include <structmember.h>

/* BaseEventLoop's constants (asyncio/base_events.py) */
#define MIN_SCHEDULED_TIMER_HANDLES 100
#define MIN_CANCELLED_TIMER_HANDLES_FRACTION 0.5
#define MAXIMUM_SELECT_TIMEOUT (24 * 3600)

typedef struct {
	PyObject_HEAD
	struct core_state *st;
	PyObject *module;
	PyObject *ready;		/* _ready: collections.deque of handles */
	PyObject *ready_append;		/* its bound append and popleft */
	PyObject *ready_popleft;
	PyObject *scheduled;		/* _scheduled: heap (list) of TimerHandles */
	PyObject *pump;			/* the engine's Pump, or NULL */
	double clock_resolution;	/* _clock_resolution */
	Py_ssize_t timer_cancelled_count;	/* _timer_cancelled_count */
	int stopping, closed, debug;	/* _stopping, _closed, _debug */
} LoopCore;

#define SLOT(o, off) (*(PyObject **)((char *)(o) + (off)))

/* Sets an object slot, dropping what was there. */
static void slot_set(PyObject *o, Py_ssize_t off, PyObject *v)
{
	PyObject *old = SLOT(o, off);

	Py_XINCREF(v);
	SLOT(o, off) = v;
	Py_XDECREF(old);
}

/* asyncio's TimerHandle or the core's own (same slots) */
static bool is_timer(const struct core_state *st, PyObject *t)
{
	return Py_TYPE(t) == st->ctimer_type || Py_TYPE(t) == st->timer_type;
}

static bool is_handle(const struct core_state *st, PyObject *h)
{
	return Py_TYPE(h) == st->handle_type || is_timer(st, h);
}

/* handle._cancelled, for asyncio's handles and anything else. */
static int handle_cancelled(const struct core_state *st, PyObject *h)
{
	PyObject *v;
	int r;

	if (is_handle(st, h))
		return SLOT(h, st->h_cancelled) == Py_True;
	v = PyObject_GetAttrString(h, "_cancelled");
	if (!v)
		return -1;
	r = PyObject_IsTrue(v);
	Py_DECREF(v);
	return r;
}

/* timer._when as a double (0 with an exception set on failure). */
static int timer_when(const struct core_state *st, PyObject *t, double *out)
{
	PyObject *w = is_timer(st, t) ? SLOT(t, st->t_when) : NULL;
	PyObject *tmp = NULL;

	if (!w) {
		tmp = w = PyObject_GetAttrString(t, "_when");
		if (!w)
			return -1;
	}
	if (PyFloat_CheckExact(w))
		*out = PyFloat_AS_DOUBLE(w);
	else
		*out = PyFloat_AsDouble(w);
	Py_XDECREF(tmp);
	return *out == -1.0 && PyErr_Occurred() ? -1 : 0;
}

static void timer_set_scheduled(const struct core_state *st, PyObject *t, bool on)
{
	if (is_timer(st, t))
		slot_set(t, st->t_scheduled, on ? Py_True : Py_False);
	else if (PyObject_SetAttrString(t, "_scheduled", on ? Py_True : Py_False) < 0)
		PyErr_Clear();
}

/* ---- the timer heap: heapq's invariant on _when (TimerHandle.__lt__) ---- */

static int heap_sift_down(const struct core_state *st, PyObject *heap, Py_ssize_t pos)
{
	Py_ssize_t n = PyList_GET_SIZE(heap), child;
	PyObject **a = &PyList_GET_ITEM(heap, 0), *item = a[pos];
	double w, cw, rw;

	if (timer_when(st, item, &w))
		return -1;
	for (;;) {
		child = 2 * pos + 1;
		if (child >= n)
			break;
		if (timer_when(st, a[child], &cw))
			return -1;
		if (child + 1 < n) {
			if (timer_when(st, a[child + 1], &rw))
				return -1;
			if (rw < cw) {
				child++;
				cw = rw;
			}
		}
		if (!(cw < w))
			break;
		a[pos] = a[child];
		pos = child;
	}
	a[pos] = item;
	return 0;
}

static int heap_push(const struct core_state *st, PyObject *heap, PyObject *item, double w)
{
	Py_ssize_t pos, parent;
	PyObject **a;
	double pw;

	if (PyList_Append(heap, item) < 0)
		return -1;
	pos = PyList_GET_SIZE(heap) - 1;
	a = &PyList_GET_ITEM(heap, 0);
	while (pos > 0) {
		parent = (pos - 1) >> 1;
		if (timer_when(st, a[parent], &pw))
			return -1;
		if (!(w < pw))
			break;
		a[pos] = a[parent];
		pos = parent;
	}
	a[pos] = item;
	return 0;
}

/* Removes and returns (a new reference to) the earliest timer. */
static PyObject *heap_pop(const struct core_state *st, PyObject *heap)
{
	Py_ssize_t n = PyList_GET_SIZE(heap);
	PyObject *last, *top;

	last = PyList_GET_ITEM(heap, n - 1);
	Py_INCREF(last);
	if (PyList_SetSlice(heap, n - 1, n, NULL) < 0) {
		Py_DECREF(last);
		return NULL;
	}
	if (n == 1)
		return last;
	top = PyList_GET_ITEM(heap, 0);		/* the list's reference, now ours */
	PyList_SET_ITEM(heap, 0, last);		/* ours, now the list's */
	if (heap_sift_down(st, heap, 0) < 0) {
		Py_DECREF(top);
		return NULL;
	}
	return top;
}

static int heap_heapify(const struct core_state *st, PyObject *heap)
{
	Py_ssize_t i;

	for (i = PyList_GET_SIZE(heap) / 2 - 1; i >= 0; i--)
		if (heap_sift_down(st, heap, i) < 0)
			return -1;
	return 0;
}

/* ---- handles ---------------------------------------------------------- */

/* events.Handle(callback, args, loop, context) without running Python:
 * asyncio's own class, its slots as Handle.__init__ leaves them when the
 * loop is not in debug mode.  Steals nothing. */
static PyObject *handle_new(LoopCore *self, PyTypeObject *type, PyObject *callback,
			    PyObject *args, PyObject *context)
{
	struct core_state *st = self->st;
	PyObject *h = type->tp_alloc(type, 0);

	if (!h)
		return NULL;
	if (context == NULL || context == Py_None) {
		context = PyContext_CopyCurrent();
		if (!context) {
			Py_DECREF(h);
			return NULL;
		}
		SLOT(h, st->h_context) = context;
	} else {
		SLOT(h, st->h_context) = Py_NewRef(context);
	}
	SLOT(h, st->h_loop) = Py_NewRef((PyObject *)self);
	SLOT(h, st->h_callback) = Py_NewRef(callback);
	SLOT(h, st->h_args) = Py_NewRef(args);
	SLOT(h, st->h_cancelled) = Py_NewRef(Py_False);
	SLOT(h, st->h_repr) = Py_NewRef(Py_None);
	SLOT(h, st->h_source_tb) = Py_NewRef(Py_None);
	return h;
}

static PyObject *tuple_of(PyObject *const *items, Py_ssize_t n)
{
	PyObject *t = PyTuple_New(n);
	Py_ssize_t i;

	if (!t)
		return NULL;
	for (i = 0; i < n; i++)
		PyTuple_SET_ITEM(t, i, Py_NewRef(items[i]));
	return t;
}

/* Handle._run's except branch: SystemExit and KeyboardInterrupt go up
 * (-1), anything else to the loop's exception handler, as asyncio words it
 * (the report_error helper). */
static int report_callback_error(LoopCore *self, PyObject *h)
{
	struct core_state *st = self->st;
	PyObject *type, *value, *tb, *r;

	if (PyErr_ExceptionMatches(PyExc_SystemExit) ||
	    PyErr_ExceptionMatches(PyExc_KeyboardInterrupt) || !st->report_error)
		return -1;
	PyErr_Fetch(&type, &value, &tb);
	PyErr_NormalizeException(&type, &value, &tb);
	if (tb && value)
		PyException_SetTraceback(value, tb);
	r = PyObject_CallFunctionObjArgs(st->report_error, h, value ? value : Py_None, NULL);
	Py_XDECREF(type);
	Py_XDECREF(value);
	Py_XDECREF(tb);
	if (!r)
		return -1;
	Py_DECREF(r);
	return 0;
}

/* Runs one handle as Handle._run does: context.run(callback, *args). */
static int run_handle(LoopCore *self, PyObject *h)
{
	struct core_state *st = self->st;
	PyObject *cb, *args, *ctx, *res, *et, *ev, *etb;

	if (!is_handle(st, h))
		goto generic;
	cb = SLOT(h, st->h_callback);
	args = SLOT(h, st->h_args);
	ctx = SLOT(h, st->h_context);
	if (!cb || !args || !ctx || !PyTuple_CheckExact(args) || !PyContext_CheckExact(ctx))
		goto generic;
	/* the callback may cancel its own handle, which drops these */
	Py_INCREF(cb);
	Py_INCREF(args);
	Py_INCREF(ctx);
	if (PyContext_Enter(ctx) < 0) {
		res = NULL;
	} else {
		res = PyObject_Vectorcall(cb, &PyTuple_GET_ITEM(args, 0),
					  (size_t)PyTuple_GET_SIZE(args), NULL);
		PyErr_Fetch(&et, &ev, &etb);
		if (PyContext_Exit(ctx) < 0) {
			Py_XDECREF(et);
			Py_XDECREF(ev);
			Py_XDECREF(etb);
			Py_XDECREF(res);
			res = NULL;
		} else {
			PyErr_Restore(et, ev, etb);
		}
	}
	Py_DECREF(cb);
	Py_DECREF(args);
	Py_DECREF(ctx);
	if (res) {
		Py_DECREF(res);
		return 0;
	}
	return report_callback_error(self, h);

generic:
	res = PyObject_CallMethodNoArgs(h, st->s_run);
	if (!res)
		return -1;
	Py_DECREF(res);
	return 0;
}

/* Debug mode: handle._run() itself, timed, with _current_handle set and
 * asyncio's slow-callback warning. */
static int run_handle_debug(LoopCore *self, PyObject *h)
{
	struct core_state *st = self->st;
	PyObject *res, *limit, *r;
	double t0, dt, slow;

	if (PyObject_SetAttr((PyObject *)self, st->s_current_handle, h) < 0)
		return -1;
	t0 = core_monotonic();
	res = PyObject_CallMethodNoArgs(h, st->s_run);
	dt = core_monotonic() - t0;
	if (!res) {
		PyObject *et, *ev, *etb;

		PyErr_Fetch(&et, &ev, &etb);
		PyObject_SetAttr((PyObject *)self, st->s_current_handle, Py_None);
		PyErr_Restore(et, ev, etb);
		return -1;
	}
	Py_DECREF(res);
	if (PyObject_SetAttr((PyObject *)self, st->s_current_handle, Py_None) < 0)
		return -1;
	limit = PyObject_GetAttrString((PyObject *)self, "slow_callback_duration");
	if (!limit)
		return -1;
	slow = PyFloat_AsDouble(limit);
	Py_DECREF(limit);
	if (slow == -1.0 && PyErr_Occurred())
		return -1;
	if (dt >= slow && st->log_slow) {
		PyObject *sec = PyFloat_FromDouble(dt);

		if (!sec)
			return -1;
		r = PyObject_CallFunctionObjArgs(st->log_slow, h, sec, NULL);
		Py_DECREF(sec);
		if (!r)
			return -1;
		Py_DECREF(r);
	}
	return 0;
}

/* ---- argument handling shared by the call_* methods ------------------- */

/* True when the only keyword is context=: the C path.  Anything else (a
 * keyword callback=, unknown keywords) goes to asyncio's Python method,
 * which raises or accepts exactly as it does. */
static bool only_context_kw(const struct core_state *st, PyObject *kwnames, Py_ssize_t nargs,
			    PyObject *const *args, PyObject **context)
{
	*context = NULL;
	if (!kwnames)
		return true;
	if (PyTuple_GET_SIZE(kwnames) != 1)
		return false;
	if (PyTuple_GET_ITEM(kwnames, 0) != st->s_context &&
	    PyUnicode_Compare(PyTuple_GET_ITEM(kwnames, 0), st->s_context) != 0)
		return false;
	*context = args[nargs];
	return true;
}

static int check_closed(LoopCore *self)
{
	if (self->closed) {
		PyErr_SetString(PyExc_RuntimeError, "Event loop is closed");
		return -1;
	}
	return 0;
}

static int ready_append(LoopCore *self, PyObject *h)
{
	PyObject *r;

	if (!self->ready_append) {
		PyErr_SetString(PyExc_RuntimeError, "specloop loop: _ready is not set");
		return -1;
	}
	r = PyObject_CallOneArg(self->ready_append, h);
	if (!r)
		return -1;
	Py_DECREF(r);
	return 0;
}

/* call_soon(callback, *args, context=None) */
static PyObject *lc_call_soon(LoopCore *self, PyObject *const *args, size_t nargsf,
			      PyObject *kwnames)
{
	struct core_state *st = self->st;
	Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
	PyObject *context, *cargs, *h;

	if (self->debug || nargs < 1 || !only_context_kw(st, kwnames, nargs, args, &context))
		return core_call_with_self(st->base_call_soon, (PyObject *)self, args, nargsf,
					   kwnames);
	if (check_closed(self))
		return NULL;
	cargs = tuple_of(args + 1, nargs - 1);
	if (!cargs)
		return NULL;
	h = handle_new(self, st->handle_type, args[0], cargs, context);
	Py_DECREF(cargs);
	if (!h)
		return NULL;
	if (ready_append(self, h) < 0) {
		Py_DECREF(h);
		return NULL;
	}
	return h;
}

/* _call_soon(callback, args, context): call_soon_threadsafe and asyncio's
 * internals use it. */
static PyObject *lc__call_soon(LoopCore *self, PyObject *const *args, size_t nargsf,
			       PyObject *kwnames)
{
	struct core_state *st = self->st;
	Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
	PyObject *h;

	if (self->debug || kwnames || nargs != 3 || !PyTuple_Check(args[1]))
		return core_call_with_self(st->base_call_soon_internal, (PyObject *)self, args,
					   nargsf, kwnames);
	h = handle_new(self, st->handle_type, args[0], args[1], args[2]);
	if (!h)
		return NULL;
	if (ready_append(self, h) < 0) {
		Py_DECREF(h);
		return NULL;
	}
	return h;
}

/* The C path of call_at: a TimerHandle at `when` on the heap. */
static PyObject *schedule(LoopCore *self, PyObject *when_obj, double when, PyObject *callback,
			  PyObject *const *rest, Py_ssize_t nrest, PyObject *context)
{
	struct core_state *st = self->st;
	PyObject *cargs, *t;

	if (check_closed(self))
		return NULL;
	if (!self->scheduled || !PyList_CheckExact(self->scheduled)) {
		PyErr_SetString(PyExc_RuntimeError, "specloop loop: _scheduled is not a list");
		return NULL;
	}
	cargs = tuple_of(rest, nrest);
	if (!cargs)
		return NULL;
	t = handle_new(self, st->ctimer_type, callback, cargs, context);
	Py_DECREF(cargs);
	if (!t)
		return NULL;
	SLOT(t, st->t_when) = Py_NewRef(when_obj);
	SLOT(t, st->t_scheduled) = Py_NewRef(Py_False);
	if (heap_push(st, self->scheduled, t, when) < 0) {
		Py_DECREF(t);
		return NULL;
	}
	slot_set(t, st->t_scheduled, Py_True);
	return t;
}

/* call_at(when, callback, *args, context=None) */
static PyObject *lc_call_at(LoopCore *self, PyObject *const *args, size_t nargsf,
			    PyObject *kwnames)
{
	struct core_state *st = self->st;
	Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
	PyObject *context;
	double when;

	if (self->debug || nargs < 2 || !only_context_kw(st, kwnames, nargs, args, &context) ||
	    !(PyFloat_CheckExact(args[0]) || PyLong_CheckExact(args[0])))
		return core_call_with_self(st->base_call_at, (PyObject *)self, args, nargsf,
					   kwnames);
	when = PyFloat_CheckExact(args[0]) ? PyFloat_AS_DOUBLE(args[0]) : PyLong_AsDouble(args[0]);
	if (when == -1.0 && PyErr_Occurred())
		return NULL;
	return schedule(self, args[0], when, args[1], args + 2, nargs - 2, context);
}

/* call_later(delay, callback, *args, context=None) */
static PyObject *lc_call_later(LoopCore *self, PyObject *const *args, size_t nargsf,
			       PyObject *kwnames)
{
	struct core_state *st = self->st;
	Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
	PyObject *context, *when_obj, *t;
	double delay, when;

	if (self->debug || nargs < 2 || !only_context_kw(st, kwnames, nargs, args, &context) ||
	    !(PyFloat_CheckExact(args[0]) || PyLong_CheckExact(args[0])))
		return core_call_with_self(st->base_call_later, (PyObject *)self, args, nargsf,
					   kwnames);
	delay = PyFloat_CheckExact(args[0]) ? PyFloat_AS_DOUBLE(args[0]) : PyLong_AsDouble(args[0]);
	if (delay == -1.0 && PyErr_Occurred())
		return NULL;
	when = core_monotonic() + delay;
	when_obj = PyFloat_FromDouble(when);
	if (!when_obj)
		return NULL;
	t = schedule(self, when_obj, when, args[1], args + 2, nargs - 2, context);
	Py_DECREF(when_obj);
	return t;
}

/* create_future(): asyncio.Future(loop=self) */
static PyObject *lc_create_future(LoopCore *self, PyObject *unused)
{
	PyObject *args[1] = { (PyObject *)self };

	return PyObject_Vectorcall(self->st->future_type, args, 0, self->st->kw_loop);
}

/* create_task(coro, *, name=None, context=None): asyncio.Task(coro,
 * loop=self, name=name, context=context) when no task factory is set and
 * the loop is not in debug mode; asyncio's method otherwise. */
static PyObject *lc_create_task(LoopCore *self, PyObject *const *args, size_t nargsf,
				PyObject *kwnames)
{
	struct core_state *st = self->st;
	Py_ssize_t nargs = PyVectorcall_NARGS(nargsf), i, nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
	PyObject *name = Py_None, *context = Py_None, *factory, *call[4];

	if (self->debug || nargs != 1)
		goto python;
	for (i = 0; i < nkw; i++) {
		PyObject *k = PyTuple_GET_ITEM(kwnames, i);

		if (PyUnicode_Compare(k, st->s_name) == 0)
			name = args[nargs + i];
		else if (PyUnicode_Compare(k, st->s_context) == 0)
			context = args[nargs + i];
		else
			goto python;
	}
	factory = PyObject_GetAttr((PyObject *)self, st->s_task_factory);
	if (!factory)
		return NULL;
	Py_DECREF(factory);
	if (factory != Py_None)
		goto python;
	if (check_closed(self))
		return NULL;
	call[0] = args[0];
	call[1] = (PyObject *)self;
	call[2] = name;
	call[3] = context;
	return PyObject_Vectorcall(st->task_type, call, 1, st->kw_task);

python:
	return core_call_with_self(st->base_create_task, (PyObject *)self, args, nargsf, kwnames);
}

static PyObject *lc_time(LoopCore *self, PyObject *unused)
{
	return PyFloat_FromDouble(core_monotonic());
}

/* ---- one iteration --------------------------------------------------- */

/* Drops cancelled timers as BaseEventLoop._run_once does: all of them when
 * they are many, else those at the head of the heap. */
static int purge_cancelled(LoopCore *self)
{
	struct core_state *st = self->st;
	PyObject *sched = self->scheduled, *fresh, *h;
	Py_ssize_t n = PyList_GET_SIZE(sched), i;
	int c;

	if (n > MIN_SCHEDULED_TIMER_HANDLES &&
	    (double)self->timer_cancelled_count / (double)n > MIN_CANCELLED_TIMER_HANDLES_FRACTION) {
		fresh = PyList_New(0);
		if (!fresh)
			return -1;
		for (i = 0; i < n; i++) {
			h = PyList_GET_ITEM(sched, i);
			c = handle_cancelled(st, h);
			if (c < 0 || (!c && PyList_Append(fresh, h) < 0)) {
				Py_DECREF(fresh);
				return -1;
			}
			if (c)
				timer_set_scheduled(st, h, false);
		}
		if (heap_heapify(st, fresh) < 0) {
			Py_DECREF(fresh);
			return -1;
		}
		Py_SETREF(self->scheduled, fresh);
		self->timer_cancelled_count = 0;
		return 0;
	}
	while (PyList_GET_SIZE(sched)) {
		c = handle_cancelled(st, PyList_GET_ITEM(sched, 0));
		if (c < 0)
			return -1;
		if (!c)
			break;
		self->timer_cancelled_count--;
		h = heap_pop(st, sched);
		if (!h)
			return -1;
		timer_set_scheduled(st, h, false);
		Py_DECREF(h);
	}
	return 0;
}

/* The selector's events into the ready queue (kernel fds). */
static int process_selector(LoopCore *self, double timeout)
{
	struct core_state *st = self->st;
	PyObject *sel, *t, *ev, *r;

	sel = PyObject_GetAttr((PyObject *)self, st->s_selector);
	if (!sel)
		return -1;
	t = timeout < 0 ? Py_NewRef(Py_None) : PyFloat_FromDouble(timeout);
	if (!t) {
		Py_DECREF(sel);
		return -1;
	}
	ev = PyObject_CallMethodOneArg(sel, st->s_select, t);
	Py_DECREF(t);
	Py_DECREF(sel);
	if (!ev)
		return -1;
	if (PyObject_IsTrue(ev) == 1)
		r = PyObject_CallMethodOneArg((PyObject *)self, st->s_process_events, ev);
	else
		r = Py_NewRef(Py_None);
	Py_DECREF(ev);
	if (!r)
		return -1;
	Py_DECREF(r);
	return 0;
}

static PyObject *lc_run_once(LoopCore *self, PyObject *unused)
{
	struct core_state *st = self->st;
	struct pump *pump = (struct pump *)self->pump;
	PyObject *sched, *h;
	Py_ssize_t nready, i;
	double timeout = -1.0, when, end_time;
	int kernel;

	if (!self->scheduled || !PyList_CheckExact(self->scheduled) || !self->ready_popleft) {
		PyErr_SetString(PyExc_RuntimeError, "specloop loop: not initialized");
		return NULL;
	}
	if (purge_cancelled(self) < 0)
		return NULL;
	sched = self->scheduled;
	nready = PyObject_Size(self->ready);
	if (nready < 0)
		return NULL;
	if (nready || self->stopping) {
		timeout = 0;
	} else if (PyList_GET_SIZE(sched)) {
		if (timer_when(st, PyList_GET_ITEM(sched, 0), &when) < 0)
			return NULL;
		timeout = when - core_monotonic();
		if (timeout > MAXIMUM_SELECT_TIMEOUT)
			timeout = MAXIMUM_SELECT_TIMEOUT;
		else if (!(timeout >= 0))
			timeout = 0;
	}

	if (pump) {
		Py_INCREF(pump);
		kernel = pump_wait(pump, timeout);
		if (kernel > 0)
			kernel = process_selector(self, 0) < 0 ? -1 : 1;
		if (kernel >= 0 && pump_has_events(pump))
			kernel = pump_dispatch(pump);
		Py_DECREF(pump);
		if (kernel < 0)
			return NULL;
	} else if (process_selector(self, timeout) < 0) {
		return NULL;
	}

	/* 'later' callbacks that are due */
	end_time = core_monotonic() + self->clock_resolution;
	sched = self->scheduled;
	while (PyList_GET_SIZE(sched)) {
		if (timer_when(st, PyList_GET_ITEM(sched, 0), &when) < 0)
			return NULL;
		if (when >= end_time)
			break;
		h = heap_pop(st, sched);
		if (!h)
			return NULL;
		timer_set_scheduled(st, h, false);
		if (ready_append(self, h) < 0) {
			Py_DECREF(h);
			return NULL;
		}
		Py_DECREF(h);
	}

	/* the only place callbacks run: those ready now, not those they add */
	nready = PyObject_Size(self->ready);
	for (i = 0; i < nready; i++) {
		int c, rc;

		h = PyObject_CallNoArgs(self->ready_popleft);
		if (!h)
			return NULL;
		c = handle_cancelled(st, h);
		if (c)
			rc = c < 0 ? -1 : 0;
		else if (self->debug)
			rc = run_handle_debug(self, h);
		else
			rc = run_handle(self, h);
		Py_DECREF(h);
		if (rc < 0)
			return NULL;
	}

	if (self->pump && pump_flush((struct pump *)self->pump) < 0)
		return NULL;
	Py_RETURN_NONE;
}

/* _core_attach(pump or None): the engine whose wait is this loop's. */
static PyObject *lc_attach(LoopCore *self, PyObject *pump)
{
	if (pump != Py_None && !pump_is(pump, self->st)) {
		PyErr_SetString(PyExc_TypeError, "_core_attach: a specloop._core.Pump or None");
		return NULL;
	}
	Py_XSETREF(self->pump, pump == Py_None ? NULL : Py_NewRef(pump));
	Py_RETURN_NONE;
}

/* ---- the state attributes ------------------------------------------- */

static PyObject *get_ready(LoopCore *self, void *c)
{
	if (!self->ready) {
		PyErr_SetString(PyExc_AttributeError, "_ready");
		return NULL;
	}
	return Py_NewRef(self->ready);
}

static int set_ready(LoopCore *self, PyObject *v, void *c)
{
	PyObject *app, *pop;

	if (!v) {
		PyErr_SetString(PyExc_AttributeError, "cannot delete _ready");
		return -1;
	}
	app = PyObject_GetAttr(v, self->st->s_append);
	if (!app)
		return -1;
	pop = PyObject_GetAttr(v, self->st->s_popleft);
	if (!pop) {
		Py_DECREF(app);
		return -1;
	}
	Py_XSETREF(self->ready, Py_NewRef(v));
	Py_XSETREF(self->ready_append, app);
	Py_XSETREF(self->ready_popleft, pop);
	return 0;
}

static PyObject *get_scheduled(LoopCore *self, void *c)
{
	if (!self->scheduled) {
		PyErr_SetString(PyExc_AttributeError, "_scheduled");
		return NULL;
	}
	return Py_NewRef(self->scheduled);
}

static int set_scheduled(LoopCore *self, PyObject *v, void *c)
{
	if (!v || !PyList_CheckExact(v)) {
		PyErr_SetString(PyExc_TypeError, "_scheduled must be a list");
		return -1;
	}
	Py_XSETREF(self->scheduled, Py_NewRef(v));
	return 0;
}

#define FLAG_GETSET(name)						\
	static PyObject *get_##name(LoopCore *self, void *c)		\
	{								\
		return PyBool_FromLong(self->name);			\
	}								\
	static int set_##name(LoopCore *self, PyObject *v, void *c)	\
	{								\
		int t;							\
		if (!v) {						\
			PyErr_SetString(PyExc_AttributeError, "cannot delete _" #name); \
			return -1;					\
		}							\
		t = PyObject_IsTrue(v);					\
		if (t < 0)						\
			return -1;					\
		self->name = t;						\
		return 0;						\
	}

FLAG_GETSET(stopping)
FLAG_GETSET(closed)
FLAG_GETSET(debug)

static PyObject *get_tcc(LoopCore *self, void *c)
{
	return PyLong_FromSsize_t(self->timer_cancelled_count);
}

static int set_tcc(LoopCore *self, PyObject *v, void *c)
{
	Py_ssize_t n = v ? PyLong_AsSsize_t(v) : -1;

	if (n == -1 && (!v || PyErr_Occurred())) {
		if (!v)
			PyErr_SetString(PyExc_AttributeError, "cannot delete _timer_cancelled_count");
		return -1;
	}
	self->timer_cancelled_count = n;
	return 0;
}

static PyObject *get_clockres(LoopCore *self, void *c)
{
	return PyFloat_FromDouble(self->clock_resolution);
}

static int set_clockres(LoopCore *self, PyObject *v, void *c)
{
	double d = v ? PyFloat_AsDouble(v) : -1.0;

	if (d == -1.0 && (!v || PyErr_Occurred())) {
		if (!v)
			PyErr_SetString(PyExc_AttributeError, "cannot delete _clock_resolution");
		return -1;
	}
	self->clock_resolution = d;
	return 0;
}

static PyObject *get_core(LoopCore *self, void *c)
{
	return PyUnicode_FromString("c");
}

static PyGetSetDef lc_getset[] = {
	{ "_ready", (getter)get_ready, (setter)set_ready, NULL, NULL },
	{ "_scheduled", (getter)get_scheduled, (setter)set_scheduled, NULL, NULL },
	{ "_stopping", (getter)get_stopping, (setter)set_stopping, NULL, NULL },
	{ "_closed", (getter)get_closed, (setter)set_closed, NULL, NULL },
	{ "_debug", (getter)get_debug, (setter)set_debug, NULL, NULL },
	{ "_timer_cancelled_count", (getter)get_tcc, (setter)set_tcc, NULL, NULL },
	{ "_clock_resolution", (getter)get_clockres, (setter)set_clockres, NULL, NULL },
	{ "_core_kind", (getter)get_core, NULL, "which loop core runs: 'c'", NULL },
	{ NULL, NULL, NULL, NULL, NULL },
};

/* BaseEventLoop.get_debug, in C: C Futures and Tasks ask the loop for it
 * at every creation, and TimerHandle.cancel at every cancel. */
static PyObject *lc_get_debug(LoopCore *self, PyObject *unused)
{
	return PyBool_FromLong(self->debug);
}

/* BaseEventLoop._timer_handle_cancelled, in C: TimerHandle.cancel calls it
 * (asyncio.wait_for and timeouts cancel a timer per operation). */
static PyObject *lc_timer_handle_cancelled(LoopCore *self, PyObject *handle)
{
	const struct core_state *st = self->st;
	PyObject *sched;
	int on;

	if (PyObject_TypeCheck(handle, st->timer_type)) {
		sched = SLOT(handle, st->t_scheduled);
		on = sched ? PyObject_IsTrue(sched) : 0;
	} else {
		sched = PyObject_GetAttrString(handle, "_scheduled");
		if (!sched)
			return NULL;
		on = PyObject_IsTrue(sched);
		Py_DECREF(sched);
	}
	if (on < 0)
		return NULL;
	if (on)
		self->timer_cancelled_count++;
	Py_RETURN_NONE;
}

/* BaseEventLoop._asyncgen_firstiter_hook, in C: run_forever installs it
 * with sys.set_asyncgen_hooks, and every async generator's first step calls
 * it (websockets starts one per message).  After shutdown_asyncgens the
 * Python one runs, for its ResourceWarning. */
static PyObject *lc_asyncgen_firstiter_hook(LoopCore *self, PyObject *agen)
{
	const struct core_state *st = self->st;
	PyObject *called, *gens, *res;
	int late;

	called = PyObject_GetAttr((PyObject *)self, st->s_asyncgens_shutdown_called);
	if (!called)
		return NULL;
	late = PyObject_IsTrue(called);
	Py_DECREF(called);
	if (late < 0)
		return NULL;
	if (late)
		return PyObject_CallFunctionObjArgs(st->base_asyncgen_firstiter, (PyObject *)self,
						    agen, NULL);
	gens = PyObject_GetAttr((PyObject *)self, st->s_asyncgens);
	if (!gens)
		return NULL;
	res = PyObject_CallMethodOneArg(gens, st->s_add, agen);
	Py_DECREF(gens);
	if (!res)
		return NULL;
	Py_DECREF(res);
	Py_RETURN_NONE;
}

#define VC (PyCFunction)(void (*)(void))
static PyMethodDef lc_methods[] = {
	{ "call_soon", VC lc_call_soon, METH_FASTCALL | METH_KEYWORDS,
	  "asyncio's call_soon, in C." },
	{ "_call_soon", VC lc__call_soon, METH_FASTCALL | METH_KEYWORDS, NULL },
	{ "call_at", VC lc_call_at, METH_FASTCALL | METH_KEYWORDS, "asyncio's call_at, in C." },
	{ "call_later", VC lc_call_later, METH_FASTCALL | METH_KEYWORDS,
	  "asyncio's call_later, in C." },
	{ "time", (PyCFunction)lc_time, METH_NOARGS, "time.monotonic(), the loop's clock." },
	{ "create_future", (PyCFunction)lc_create_future, METH_NOARGS,
	  "asyncio.Future(loop=self)." },
	{ "create_task", VC lc_create_task, METH_FASTCALL | METH_KEYWORDS,
	  "asyncio's create_task, in C when no task factory is set." },
	{ "get_debug", (PyCFunction)lc_get_debug, METH_NOARGS, "asyncio's get_debug, in C." },
	{ "_timer_handle_cancelled", (PyCFunction)lc_timer_handle_cancelled, METH_O, NULL },
	{ "_asyncgen_firstiter_hook", (PyCFunction)lc_asyncgen_firstiter_hook, METH_O, NULL },
	{ "_run_once", (PyCFunction)lc_run_once, METH_NOARGS,
	  "One iteration: timers, I/O (the engine's wait), ready callbacks, one flush." },
	{ "_core_attach", (PyCFunction)lc_attach, METH_O, NULL },
	{ NULL, NULL, 0, NULL },
};

static PyObject *lc_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
	LoopCore *self = (LoopCore *)type->tp_alloc(type, 0);
	PyObject *mod;

	if (!self)
		return NULL;
	mod = PyType_GetModuleByDef(type, core_module_def());
	if (!mod) {
		Py_DECREF(self);
		return NULL;
	}
	self->module = Py_NewRef(mod);
	self->st = core_state_of(mod);
	self->closed = 1;	/* until BaseEventLoop.__init__ says otherwise */
	self->clock_resolution = 1e-9;
	return (PyObject *)self;
}

static int lc_traverse(LoopCore *self, visitproc visit, void *arg)
{
	Py_VISIT(Py_TYPE(self));
	Py_VISIT(self->module);
	Py_VISIT(self->ready);
	Py_VISIT(self->ready_append);
	Py_VISIT(self->ready_popleft);
	Py_VISIT(self->scheduled);
	Py_VISIT(self->pump);
	return 0;
}

static int lc_clear(LoopCore *self)
{
	Py_CLEAR(self->ready);
	Py_CLEAR(self->ready_append);
	Py_CLEAR(self->ready_popleft);
	Py_CLEAR(self->scheduled);
	Py_CLEAR(self->pump);
	return 0;
}

static void lc_dealloc(LoopCore *self)
{
	PyTypeObject *tp = Py_TYPE(self);

	PyObject_GC_UnTrack(self);
	lc_clear(self);
	Py_CLEAR(self->module);
	tp->tp_free((PyObject *)self);
	Py_DECREF(tp);
}

static PyType_Slot lc_slots[] = {
	{ Py_tp_new, lc_new },
	{ Py_tp_dealloc, lc_dealloc },
	{ Py_tp_traverse, lc_traverse },
	{ Py_tp_clear, lc_clear },
	{ Py_tp_methods, lc_methods },
	{ Py_tp_getset, lc_getset },
	{ Py_tp_doc, "The C core of specloop.Loop (see native/py/loopcore.c)." },
	{ 0, NULL },
};

static PyType_Spec lc_spec = {
	.name = "specloop._core.LoopCore",
	.basicsize = sizeof(LoopCore),
	.flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
	.slots = lc_slots,
};

/* ---- TimerHandle with cancel() in C ------------------------------------ */

/*
 * asyncio.TimerHandle.cancel and Handle.cancel are two Python frames, run
 * once per request by every framework that arms a keep-alive or read
 * timeout and cancels it when data comes (uvloop's are C).  The core's
 * timers are a subclass of asyncio.TimerHandle (isinstance holds, same
 * slots) whose cancel does the same in C: tell the loop a scheduled timer
 * went (_timer_handle_cancelled), mark it, drop the callback and its
 * arguments.  In debug mode, or on a loop that is not a LoopCore, asyncio's
 * own runs (it keeps a repr for slow-callback reports).
 */
static PyObject *ct_cancel(PyObject *self, PyTypeObject *defining, PyObject *const *args,
			   Py_ssize_t nargs, PyObject *kwnames)
{
	const struct core_state *st = core_state_of(PyType_GetModule(defining));
	PyObject *loop, *sched;

	if (nargs || (kwnames && PyTuple_GET_SIZE(kwnames))) {
		PyErr_SetString(PyExc_TypeError, "TimerHandle.cancel() takes no arguments");
		return NULL;
	}
	if (SLOT(self, st->h_cancelled) == Py_True)
		Py_RETURN_NONE;
	loop = SLOT(self, st->h_loop);
	if (!loop || !PyObject_TypeCheck(loop, st->loop_type) || ((LoopCore *)loop)->debug) {
		PyObject *f = PyObject_GetAttrString((PyObject *)st->timer_type, "cancel");
		PyObject *r;

		if (!f)
			return NULL;
		r = PyObject_CallOneArg(f, self);
		Py_DECREF(f);
		return r;
	}
	sched = SLOT(self, st->t_scheduled);
	if (sched == Py_True)
		((LoopCore *)loop)->timer_cancelled_count++;
	slot_set(self, st->h_cancelled, Py_True);
	slot_set(self, st->h_callback, Py_None);
	slot_set(self, st->h_args, Py_None);
	Py_RETURN_NONE;
}

static PyMethodDef ct_methods[] = {
	{ "cancel", (PyCFunction)(void (*)(void))ct_cancel,
	  METH_METHOD | METH_FASTCALL | METH_KEYWORDS, "asyncio's TimerHandle.cancel, in C." },
	{ NULL, NULL, 0, NULL },
};

static PyType_Slot ct_slots[] = {
	{ Py_tp_methods, ct_methods },
	{ Py_tp_doc, "asyncio.TimerHandle whose cancel() is C (specloop's loop core)." },
	{ 0, NULL },
};

static PyType_Spec ct_spec = {
	.name = "specloop._core.TimerHandle",
	.basicsize = 0,		/* asyncio's slots, nothing more */
	.flags = Py_TPFLAGS_DEFAULT,
	.slots = ct_slots,
};

int loopcore_init_timer_type(PyObject *module, struct core_state *st)
{
	st->ctimer_type = (PyTypeObject *)PyType_FromModuleAndSpec(module, &ct_spec,
								  (PyObject *)st->timer_type);
	if (!st->ctimer_type)
		return -1;
	if (st->ctimer_type->tp_basicsize != st->timer_type->tp_basicsize) {
		PyErr_SetString(PyExc_ImportError, "specloop._core: TimerHandle layout differs");
		return -1;
	}
	return PyModule_AddObjectRef(module, "TimerHandle", (PyObject *)st->ctimer_type);
}

int loopcore_init_type(PyObject *module, struct core_state *st)
{
	st->loop_type = (PyTypeObject *)PyType_FromModuleAndSpec(module, &lc_spec, NULL);
	if (!st->loop_type)
		return -1;
	return PyModule_AddObjectRef(module, "LoopCore", (PyObject *)st->loop_type);
}
