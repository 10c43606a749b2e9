/* SPDX-License-Identifier: MIT */
/*
 * pump.c - Pump: one engine inside the loop.
 *
 * The loop's blocking wait is pump_wait(): one epoll set holds the engine's
 * AF_XDP sockets and the selector's own epoll fd (the kernel's sockets,
 * pipes and the self-pipe of asyncio stay in asyncio's selector; its epoll
 * fd becomes readable when any of them is).  While only the engine has
 * work (RX, fast-path requests answered in C, TCP timers, TX) the wait
 * handles it here and keeps waiting: fast-path traffic runs no Python.  It
 * returns to the loop when the selector has ready fds, when the engine has
 * events for Python transports, or when the loop's own timeout ends.
 *
 * pump_dispatch() then hands the events to transports (data straight into
 * the protocol, see transport.c), and pump_flush() ends every iteration
 * with the engine's one TX kick.
 *
 * Under load one kick per iteration carries the writes of many
 * connections.  A loop that slept and woke for one event is not under
 * load, and there a write waiting for the end of the iteration waits for
 * whatever the app does after it (a framework's bookkeeping, logging):
 * the kernel's TCP sends at write() time (RFC 9293 §3.9.1.2 leaves the
 * timing to the sender; Linux pushes with TCP_NODELAY).  So in that state
 * pump_conn_write() flushes at once ("eager"), until a wait finds work
 * piled up again.
 */
#include "pycore.h"

#include <errno.h>
#include <sys/epoll.h>
#include <unistd.h>

#define RX_BUDGET 512		/* frames per engine poll */
#define SEL_MARK 0xffffffffu	/* epoll data of the selector's fd */
#define URGENT_ROUNDS 64	/* zero-timeout rounds for engine work in one wait */
/* adaptive polling (poll_adapt): at most this many active connections,
 * and the smallest window */
#define POLL_MAX_CONNS 2
#define POLL_MIN_US 4
#define CONN_INDEX_MASK ((1u << 20) - 1)	/* see tcp_conn.c: index | gen << 20 */
#define MAX_XSK 16

struct pump {
	PyObject_HEAD
	struct core_state *st;
	PyObject *module;
	const struct sl_api *api;
	struct sl_engine *eng;		/* NULL once closed */
	PyObject *stack;		/* specloop.stack.Stack: _accept(conn, listener) */
	PyObject **conns;		/* transports by connection index */
	uint32_t *conn_ids;		/* which connection each slot is for */
	uint32_t max_conns;
	int epfd;
	int sel_fd;
	int xsk_fds[MAX_XSK];
	int nxsk;
	uint32_t nev, ev_next;		/* events of the last poll, next to dispatch */
	bool poll_needed;		/* poll at the next wait, without blocking */
	bool eager;			/* light load: writes leave at write time */
	bool dispatching;		/* inside pump_dispatch: RX frames in use */
	bool no_pwait2;			/* epoll_pwait2 missing: millisecond waits */
	uint32_t busy_poll_us;		/* fixed spin before every sleep (0: none) */
	uint32_t adaptive_poll_us;	/* ceiling of the adaptive spin (0: off) */
	uint32_t poll_window_us;	/* the adaptive spin's window now */
	uint64_t gap_avg8;		/* moving average of the gaps, 1/8 µs */
	/* what the waits did (Pump.stats()) */
	uint64_t waits;			/* pump_wait calls (loop iterations) */
	uint64_t engine_rounds;		/* engine work done without returning */
	uint64_t returns_events;	/* returned with events for Python */
	uint64_t returns_kernel;	/* returned for the selector's fds */
	uint64_t returns_timeout;	/* returned because the loop's timeout ended */
	uint64_t events_dispatched;
	uint64_t busy_poll_hits;		/* spins that found RX frames */
	uint64_t busy_poll_misses;	/* spins that ended in a sleep */
	uint64_t eager_flushes;		/* writes sent at write time */
	uint64_t flush_errors;
	int last_flush_error;
};

static int flush_engine(struct pump *p);

bool pump_is(PyObject *o, struct core_state *st)
{
	return PyObject_TypeCheck(o, st->pump_type);
}

int pump_conn_write(PyObject *pump, uint32_t conn, const void *buf, size_t len)
{
	struct pump *p = (struct pump *)pump;
	int rc;

	if (!p->eng)
		return -EBADF;
	rc = p->api->conn_write(p->eng, conn, buf, len);
	/* not while events are being (or still to be) dispatched: a flush
	 * releases the RX frames their data sits in */
	if (rc >= 0 && p->eager && !p->dispatching && !pump_has_events(p)) {
		p->eager_flushes++;
		flush_engine(p);
	}
	return rc;
}

/* Are all events of the last engine poll for one connection? */
static bool one_connection(struct pump *p, uint32_t k)
{
	const struct sl_event *evs = p->api->engine_events(p->eng);
	uint32_t i;

	for (i = 1; i < k; i++)
		if (evs[i].conn != evs[0].conn)
			return false;
	return true;
}

int pump_conn_setopt(PyObject *pump, uint32_t conn, int opt, int value)
{
	struct pump *p = (struct pump *)pump;

	return p->eng ? p->api->conn_setopt(p->eng, conn, opt, value) : -EBADF;
}

bool pump_has_events(const struct pump *p)
{
	return p->ev_next < p->nev;
}

static int flush_engine(struct pump *p)
{
	int rc;

	if (!p->eng)
		return 0;
	rc = p->api->engine_flush(p->eng);
	if (rc < 0) {
		/* the interface went away or down: counted, the loop goes on
		 * (TCP retransmits what did not leave) */
		p->flush_errors++;
		p->last_flush_error = -rc;
	}
	return 0;
}

int pump_flush(struct pump *p)
{
	return flush_engine(p);
}

/* epoll with a microsecond timeout (-1: none); the GIL is released while
 * it may block.  Returns as epoll_wait. */
static int wait_fds(struct pump *p, struct epoll_event *evs, int max, int64_t tmo_us)
{
	struct timespec ts, *tsp = NULL;
	int n, ms;

	if (tmo_us == 0)
		return p->no_pwait2 ? epoll_wait(p->epfd, evs, max, 0)
				    : epoll_pwait2(p->epfd, evs, max, &(struct timespec){ 0, 0 },
						   NULL);
	if (tmo_us > 0) {
		ts.tv_sec = tmo_us / 1000000;
		ts.tv_nsec = (tmo_us % 1000000) * 1000;
		tsp = &ts;
	}
	Py_BEGIN_ALLOW_THREADS
	if (!p->no_pwait2) {
		n = epoll_pwait2(p->epfd, evs, max, tsp, NULL);
	} else {
		ms = tmo_us < 0 ? -1 : (int)((tmo_us + 999) / 1000);
		n = epoll_wait(p->epfd, evs, max, ms);
	}
	Py_END_ALLOW_THREADS
	return n;
}

/* Spins on the RX ring (no system call) for up to budget µs, the GIL
 * released; true if it has frames. */
static bool busy_poll(struct pump *p, int64_t budget_us)
{
	uint64_t end = core_monotonic_us() + (uint64_t)budget_us;
	bool found = false;

	Py_BEGIN_ALLOW_THREADS
	do {
		if (p->api->engine_rx_ready(p->eng)) {
			found = true;
			break;
		}
	} while (core_monotonic_us() < end);
	Py_END_ALLOW_THREADS
	return found;
}

/*
 * Adaptive polling: spin on the RX ring before a sleep while one or two
 * connections pace the loop (their peers wait on our answer, so our
 * wakeup is on their critical path) and the recent gaps between batches
 * were short enough to spin through.  A sleep and its wakeup cost the
 * waiting CPU a fixed price, and the peer as much latency: measured on this
 * project's VM (idle CPUs halt), ~10 µs of CPU per sleep and ~40 µs of a
 * one-connection turn.  Under load (many connections) the peers have
 * other work while we sleep, the gaps are our idle time, and a spin would
 * only burn it: no spin there.
 *
 * `gap`: µs from the start of a wait to its batch (a slept one includes
 * the wakeup); its moving average (1/8 weight, kept in 1/8 µs) sets the
 * window: twice the average within the ceiling, or none beyond it.  The
 * spin sees only the RX ring: a wait that the selector's fds ended (kernel
 * sockets, the self-pipe of signals and call_soon_threadsafe) counts as a
 * gap beyond the ceiling, so that a loop paced by kernel sockets stops
 * spinning.
 */
static void poll_adapt(struct pump *p, uint64_t gap)
{
	uint64_t avg, cap = p->adaptive_poll_us;

	if (gap > 4 * cap)
		gap = 4 * cap;	/* an idle spell moves the average one step */
	p->gap_avg8 += (int64_t)gap - (int64_t)(p->gap_avg8 >> 3);
	avg = p->gap_avg8 >> 3;
	if (avg > cap || p->api->engine_active_conns(p->eng) > POLL_MAX_CONNS)
		p->poll_window_us = 0;
	else
		p->poll_window_us = (uint32_t)(2 * avg < POLL_MIN_US ? POLL_MIN_US :
					       2 * avg > cap ? cap : 2 * avg);
}

int pump_wait(struct pump *p, double timeout)
{
	struct epoll_event evs[MAX_XSK + 2];
	uint64_t now = core_monotonic_us(), deadline, tdl, wake, start;
	int64_t tmo, spin;
	int n, i, k, rounds = 0;
	bool kernel, xsk, urgent, idle, ready;

	if (!p->eng) {
		PyErr_SetString(PyExc_RuntimeError, "specloop: the engine of this loop is closed");
		return -1;
	}
	p->waits++;
	if (pump_has_events(p)) {
		/* events from before a KeyboardInterrupt: they go first */
		n = wait_fds(p, evs, MAX_XSK + 2, 0);
		for (i = 0, kernel = false; i < n; i++)
			kernel |= evs[i].data.u32 == SEL_MARK;
		return kernel;
	}
	deadline = timeout < 0 ? UINT64_MAX : now + (uint64_t)(timeout * 1e6 + 0.999);
	for (;;) {
		urgent = p->poll_needed ||
			 (rounds < URGENT_ROUNDS && p->api->engine_pending(p->eng));
		tdl = p->api->engine_next_timer(p->eng);
		if (urgent) {
			tmo = 0;
		} else {
			wake = tdl && tdl < deadline ? tdl : deadline;
			tmo = wake == UINT64_MAX ? -1 : wake > now ? (int64_t)(wake - now) : 0;
		}
		idle = tmo != 0;
		/* frames already in the ring: no wait, and nothing to learn */
		ready = idle && p->api->engine_rx_ready(p->eng);
		if (ready)
			tmo = 0;
		start = core_monotonic_us();
		spin = p->busy_poll_us ? p->busy_poll_us : p->poll_window_us;
		if (tmo != 0 && spin) {
			if (tmo > 0 && tmo < spin)
				spin = tmo;
			if (busy_poll(p, spin)) {
				tmo = 0;
				p->busy_poll_hits++;
			} else {
				p->busy_poll_misses++;
				if (tmo > 0)
					tmo = tmo > spin ? tmo - spin : 0;
			}
		}
		n = wait_fds(p, evs, MAX_XSK + 2, tmo);
		if (n < 0 && errno == ENOSYS && !p->no_pwait2) {
			p->no_pwait2 = true;
			continue;
		}
		if (n < 0) {
			if (errno != EINTR) {
				PyErr_SetFromErrno(PyExc_OSError);
				return -1;
			}
			/* PEP 475: run signal handlers, then wait again */
			if (PyErr_CheckSignals() < 0)
				return -1;
			now = core_monotonic_us();
			continue;
		}
		kernel = xsk = false;
		for (i = 0; i < n; i++) {
			if (evs[i].data.u32 == SEL_MARK)
				kernel = true;
			else
				xsk = true;
		}
		now = core_monotonic_us();
		if (idle && !ready && n > 0 && p->adaptive_poll_us && !p->busy_poll_us)
			poll_adapt(p, xsk ? now - start : UINT64_MAX);
		if (xsk || urgent || (tdl && now >= tdl)) {
			p->poll_needed = false;
			rounds++;
			k = p->api->engine_poll(p->eng, RX_BUDGET);
			/* idle and one connection's events (a handshake's last
			 * ACK often brings the first request): eager; several
			 * connections' work piled up: batch */
			if (k > 0 && !one_connection(p, (uint32_t)k))
				p->eager = false;
			else if (k > 0 && idle)
				p->eager = true;
			if (k > 0) {
				p->nev = (uint32_t)k;
				p->ev_next = 0;
				p->returns_events++;
				return kernel;
			}
			/* nothing for Python: what the engine did leaves now */
			flush_engine(p);
			p->engine_rounds++;
		}
		if (kernel) {
			p->returns_kernel++;
			return 1;
		}
		if (now >= deadline || timeout == 0) {
			p->returns_timeout++;
			return 0;
		}
	}
}

/* ---- dispatch ------------------------------------------------------- */

/* A strong reference to the transport of connection `conn`, or NULL. */
static PyObject *transport_of(struct pump *p, uint32_t conn)
{
	uint32_t idx = conn & CONN_INDEX_MASK;

	if (idx >= p->max_conns || p->conn_ids[idx] != conn || !p->conns[idx])
		return NULL;
	return Py_NewRef(p->conns[idx]);
}

static void forget(struct pump *p, uint32_t conn)
{
	uint32_t idx = conn & CONN_INDEX_MASK;

	if (idx < p->max_conns && p->conn_ids[idx] == conn) {
		p->conn_ids[idx] = 0;
		Py_CLEAR(p->conns[idx]);
	}
}

static int call_glue(PyObject *obj, PyObject *name, PyObject *arg)
{
	return core_glue_done(arg ? PyObject_CallMethodOneArg(obj, name, arg)
				  : PyObject_CallMethodNoArgs(obj, name), obj);
}

static int dispatch_one(struct pump *p, const struct sl_event *ev)
{
	struct core_state *st = p->st;
	PyObject *tr, *arg;
	int rc = 0;

	switch (ev->type) {
	case SL_EV_DATA:
		tr = transport_of(p, ev->conn);
		if (tr) {
			rc = transport_deliver(st, tr, ev->data, ev->len);
			Py_DECREF(tr);
		}
		return rc;
	case SL_EV_ACCEPT:
		return core_glue_done(PyObject_CallMethod(p->stack, "_accept", "II", ev->conn,
							  ev->arg), p->stack);
	case SL_EV_WRITABLE:
		tr = transport_of(p, ev->conn);
		if (tr) {
			rc = call_glue(tr, st->s_write_ready, NULL);
			Py_DECREF(tr);
		}
		return rc;
	case SL_EV_EOF:
		tr = transport_of(p, ev->conn);
		if (tr) {
			rc = transport_eof(st, tr);
			Py_DECREF(tr);
		}
		return rc;
	case SL_EV_CLOSED:
		tr = transport_of(p, ev->conn);
		if (!tr)
			return 0;
		forget(p, ev->conn);
		arg = PyLong_FromLong(ev->err);
		rc = arg ? call_glue(tr, st->s_closed_event, arg) : core_glue_done(NULL, tr);
		Py_XDECREF(arg);
		Py_DECREF(tr);
		return rc;
	case SL_EV_RETURNED:
		/* the fast path took it back: this transport's connection is over */
		tr = transport_of(p, ev->conn);
		if (!tr)
			return 0;
		forget(p, ev->conn);
		rc = call_glue(tr, st->s_returned_event, NULL);
		Py_DECREF(tr);
		return rc;
	default:
		return 0;
	}
}

int pump_dispatch(struct pump *p)
{
	const struct sl_event *evs;

	if (!p->eng) {
		p->nev = p->ev_next = 0;
		return 0;
	}
	evs = p->api->engine_events(p->eng);
	p->dispatching = true;
	while (p->ev_next < p->nev) {
		/* moved on first: an exception leaves the rest for next time */
		const struct sl_event *ev = &evs[p->ev_next++];

		p->events_dispatched++;
		if (dispatch_one(p, ev) < 0) {
			p->dispatching = false;
			return -1;
		}
		if (!p->eng)
			break;	/* a callback closed the loop's engine */
	}
	p->dispatching = false;
	p->nev = p->ev_next = 0;
	return 0;
}

/* ---- the Python side -------------------------------------------------- */

static PyObject *pump_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
	static char *kwlist[] = { "engine", "api", "stack", "selector_fd", "xsk_fds",
				  "max_conns", "busy_poll_us", "adaptive_poll_us", NULL };
	unsigned long long eng_addr, api_addr;
	PyObject *stack, *fds, *mod;
	int sel_fd;
	unsigned int max_conns, busy = 0, adaptive = 0;
	struct pump *p;
	struct epoll_event ev;
	Py_ssize_t i, nfds;

	if (!PyArg_ParseTupleAndKeywords(args, kw, "KKOiOI|II:Pump", kwlist, &eng_addr, &api_addr,
					 &stack, &sel_fd, &fds, &max_conns, &busy, &adaptive))
		return NULL;
	if (!eng_addr || !api_addr) {
		PyErr_SetString(PyExc_ValueError, "Pump: engine and api addresses must be set");
		return NULL;
	}
	if (max_conns == 0 || max_conns > CONN_INDEX_MASK + 1) {
		PyErr_SetString(PyExc_ValueError, "Pump: max_conns out of range");
		return NULL;
	}
	if (sel_fd < 0) {
		PyErr_SetString(PyExc_ValueError, "Pump: selector_fd must be the selector's epoll fd");
		return NULL;
	}
	fds = PySequence_Fast(fds, "Pump: xsk_fds must be a sequence of fds");
	if (!fds)
		return NULL;
	nfds = PySequence_Fast_GET_SIZE(fds);
	if (nfds < 1 || nfds > MAX_XSK) {
		Py_DECREF(fds);
		PyErr_SetString(PyExc_ValueError, "Pump: 1 to 16 xsk fds");
		return NULL;
	}
	p = (struct pump *)type->tp_alloc(type, 0);
	if (!p) {
		Py_DECREF(fds);
		return NULL;
	}
	p->epfd = -1;
	mod = PyType_GetModuleByDef(type, core_module_def());
	if (!mod)
		goto out_fail;
	p->module = Py_NewRef(mod);
	p->st = core_state_of(mod);
	p->api = (const struct sl_api *)(uintptr_t)api_addr;
	if (p->api->size < sizeof(struct sl_api)) {
		PyErr_SetString(PyExc_ImportError,
				"specloop: _native and _core were built from different sources");
		goto out_fail;
	}
	p->eng = (struct sl_engine *)(uintptr_t)eng_addr;
	p->stack = Py_NewRef(stack);
	p->max_conns = max_conns;
	p->busy_poll_us = busy;
	p->adaptive_poll_us = adaptive;
	p->sel_fd = sel_fd;
	p->conns = PyMem_Calloc(max_conns, sizeof(*p->conns));
	p->conn_ids = PyMem_Calloc(max_conns, sizeof(*p->conn_ids));
	if (!p->conns || !p->conn_ids) {
		PyErr_NoMemory();
		goto out_fail;
	}
	p->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (p->epfd < 0) {
		PyErr_SetFromErrno(PyExc_OSError);
		goto out_fail;
	}
	memset(&ev, 0, sizeof(ev));
	ev.events = EPOLLIN;
	ev.data.u32 = SEL_MARK;
	if (epoll_ctl(p->epfd, EPOLL_CTL_ADD, sel_fd, &ev) < 0) {
		PyErr_SetFromErrno(PyExc_OSError);
		goto out_fail;
	}
	for (i = 0; i < nfds; i++) {
		int fd = PyLong_AsLong(PySequence_Fast_GET_ITEM(fds, i));

		if (fd == -1 && PyErr_Occurred())
			goto out_fail;
		ev.data.u32 = (uint32_t)i;
		if (epoll_ctl(p->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
			PyErr_SetFromErrno(PyExc_OSError);
			goto out_fail;
		}
		p->xsk_fds[p->nxsk++] = fd;
	}
	Py_DECREF(fds);
	return (PyObject *)p;

out_fail:
	Py_DECREF(fds);
	Py_DECREF(p);
	return NULL;
}

static void pump_release(struct pump *p)
{
	uint32_t i;

	p->eng = NULL;
	p->nev = p->ev_next = 0;
	if (p->conns)
		for (i = 0; i < p->max_conns; i++) {
			p->conn_ids[i] = 0;
			Py_CLEAR(p->conns[i]);
		}
	if (p->epfd >= 0) {
		close(p->epfd);
		p->epfd = -1;
	}
}

static PyObject *pump_adopt(struct pump *p, PyObject *const *args, Py_ssize_t nargs)
{
	unsigned long conn;
	uint32_t idx;

	if (nargs != 2) {
		PyErr_SetString(PyExc_TypeError, "adopt(conn, transport)");
		return NULL;
	}
	conn = PyLong_AsUnsignedLong(args[0]);
	if (conn == (unsigned long)-1 && PyErr_Occurred())
		return NULL;
	idx = (uint32_t)conn & CONN_INDEX_MASK;
	if (!conn || conn > UINT32_MAX || idx >= p->max_conns) {
		PyErr_Format(PyExc_ValueError, "adopt: no such connection %lu", conn);
		return NULL;
	}
	p->conn_ids[idx] = (uint32_t)conn;
	Py_XSETREF(p->conns[idx], Py_NewRef(args[1]));
	Py_RETURN_NONE;
}

static PyObject *pump_forget(struct pump *p, PyObject *arg)
{
	unsigned long conn = PyLong_AsUnsignedLong(arg);

	if (conn == (unsigned long)-1 && PyErr_Occurred())
		return NULL;
	if (p->conns && conn <= UINT32_MAX)
		forget(p, (uint32_t)conn);
	Py_RETURN_NONE;
}

static PyObject *pump_poll_soon(struct pump *p, PyObject *unused)
{
	p->poll_needed = true;
	Py_RETURN_NONE;
}

/* wait(timeout or None) -> True if the selector has ready fds: the Python
 * loop core's way in (specloop.loop.EngineSelector). */
static PyObject *pump_py_wait(struct pump *p, PyObject *arg)
{
	double t = -1.0;
	int r;

	if (arg != Py_None) {
		t = PyFloat_AsDouble(arg);
		if (t == -1.0 && PyErr_Occurred())
			return NULL;
		if (t < 0)
			t = 0;
	}
	r = pump_wait(p, t);
	if (r < 0)
		return NULL;
	return PyBool_FromLong(r);
}

static PyObject *pump_py_dispatch(struct pump *p, PyObject *unused)
{
	if (pump_dispatch(p) < 0)
		return NULL;
	Py_RETURN_NONE;
}

static PyObject *pump_py_flush(struct pump *p, PyObject *unused)
{
	if (pump_flush(p) < 0)
		return NULL;
	Py_RETURN_NONE;
}

static PyObject *pump_py_has_events(struct pump *p, PyObject *unused)
{
	return PyBool_FromLong(pump_has_events(p));
}

static PyObject *pump_close(struct pump *p, PyObject *unused)
{
	pump_release(p);
	Py_RETURN_NONE;
}

static PyObject *pump_stats(struct pump *p, PyObject *unused)
{
	return Py_BuildValue("{sKsKsKsKsKsKsKsKsKsKsisi}",
			     "loop_waits", (unsigned long long)p->waits,
			     "loop_engine_rounds", (unsigned long long)p->engine_rounds,
			     "loop_returns_events", (unsigned long long)p->returns_events,
			     "loop_returns_kernel", (unsigned long long)p->returns_kernel,
			     "loop_returns_timeout", (unsigned long long)p->returns_timeout,
			     "loop_events_dispatched", (unsigned long long)p->events_dispatched,
			     "loop_busy_poll_hits", (unsigned long long)p->busy_poll_hits,
			     "loop_busy_poll_misses", (unsigned long long)p->busy_poll_misses,
			     "loop_poll_window_us", (int)p->poll_window_us,
			     "loop_eager_flushes", (unsigned long long)p->eager_flushes,
			     "loop_flush_errors", (unsigned long long)p->flush_errors,
			     "loop_last_flush_errno", p->last_flush_error);
}

static PyMethodDef pump_methods[] = {
	{ "adopt", (PyCFunction)(void (*)(void))pump_adopt, METH_FASTCALL,
	  "adopt(conn, transport): the engine's events for conn go to transport." },
	{ "forget", (PyCFunction)pump_forget, METH_O, "forget(conn)" },
	{ "poll_soon", (PyCFunction)pump_poll_soon, METH_NOARGS,
	  "Poll the engine at the next wait without blocking (held data to hand over)." },
	{ "wait", (PyCFunction)pump_py_wait, METH_O,
	  "wait(timeout): the loop's blocking wait; True if the selector has ready fds." },
	{ "dispatch", (PyCFunction)pump_py_dispatch, METH_NOARGS,
	  "Hands the engine's events to transports." },
	{ "has_events", (PyCFunction)pump_py_has_events, METH_NOARGS, NULL },
	{ "flush", (PyCFunction)pump_py_flush, METH_NOARGS, "End of an iteration: TX." },
	{ "close", (PyCFunction)pump_close, METH_NOARGS, "Forgets the engine and transports." },
	{ "stats", (PyCFunction)pump_stats, METH_NOARGS, "What the waits did, as counters." },
	{ NULL, NULL, 0, NULL },
};

static int pump_traverse(struct pump *p, visitproc visit, void *arg)
{
	uint32_t i;

	Py_VISIT(Py_TYPE(p));
	Py_VISIT(p->module);
	Py_VISIT(p->stack);
	if (p->conns)
		for (i = 0; i < p->max_conns; i++)
			Py_VISIT(p->conns[i]);
	return 0;
}

static int pump_clear(struct pump *p)
{
	pump_release(p);
	Py_CLEAR(p->stack);
	return 0;
}

static void pump_dealloc(struct pump *p)
{
	PyTypeObject *tp = Py_TYPE(p);

	PyObject_GC_UnTrack(p);
	pump_clear(p);
	PyMem_Free(p->conns);
	PyMem_Free(p->conn_ids);
	Py_CLEAR(p->module);
	tp->tp_free((PyObject *)p);
	Py_DECREF(tp);
}

static PyType_Slot pump_slots[] = {
	{ Py_tp_new, pump_new },
	{ Py_tp_dealloc, pump_dealloc },
	{ Py_tp_traverse, pump_traverse },
	{ Py_tp_clear, pump_clear },
	{ Py_tp_methods, pump_methods },
	{ Py_tp_doc, "One engine in the loop: its wait, event dispatch and flush (pump.c)." },
	{ 0, NULL },
};

static PyType_Spec pump_spec = {
	.name = "specloop._core.Pump",
	.basicsize = sizeof(struct pump),
	.flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
	.slots = pump_slots,
};

int pump_init_type(PyObject *module, struct core_state *st)
{
	st->pump_type = (PyTypeObject *)PyType_FromModuleAndSpec(module, &pump_spec, NULL);
	if (!st->pump_type)
		return -1;
	return PyModule_AddObjectRef(module, "Pump", (PyObject *)st->pump_type);
}
