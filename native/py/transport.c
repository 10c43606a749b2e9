/* SPDX-License-Identifier: MIT */
/*
 * transport.c - TransportCore, the C base of specloop's BypassTransport.
 *
 * asyncio's transports are Python classes with __slots__, so a C base for
 * ours has to extend their layout: at import this module makes
 * TransportCore as a subclass of asyncio.transports._FlowControlMixin whose
 * instances carry `struct tcore` right after the mixin's slots.  Its fields
 * are the transport's state attributes (_conn, _paused, _held, ...): C
 * members, so specloop/transports.py reads and writes them as attributes.
 *
 * In C is what runs per event or per write: delivery of an engine DATA
 * event to the protocol (one bytes object for a Protocol, straight into
 * get_buffer() for a BufferedProtocol), write()/writelines() when nothing is
 * buffered, and the small queries.  Everything rare stays in Python, with
 * CPython's guards and wording (_write_more, _write_lost, _fatal_error,
 * _eof_received, _release_held).
 */
#include "pycore.h"

#include <errno.h>
#include <limits.h>
#include <string.h>
#include <structmember.h>

struct tcore {
	PyObject *pump;		/* _pump: the Pump, None once the connection went */
	PyObject *protocol;	/* _protocol */
	PyObject *held;		/* _held: bytes not handed to the protocol yet */
	PyObject *empty_waiter;	/* _empty_waiter: sendfile in progress */
	Py_ssize_t buffer_size;	/* _buffer_size: bytes in the Python-side _buffer */
	int conn_lost;		/* _conn_lost: connection_lost is scheduled */
	unsigned int conn;	/* _conn: the engine's connection id */
	char closing;		/* _closing: close() was called */
	char paused;		/* _paused: pause_reading() */
	char eof;		/* _eof: write_eof() */
	char gone;		/* _gone: the engine freed the connection */
	char made;		/* _made: connection_made() has run */
	char buffered;		/* _buffered: the protocol is a BufferedProtocol */
	char eof_held;		/* _eof_held: EOF not handed over yet */
};

static struct tcore *tc(const struct core_state *st, PyObject *o)
{
	return (struct tcore *)((char *)o + st->tc_offset);
}

static struct core_state *state_of(PyObject *self)
{
	PyObject *mod = PyType_GetModuleByDef(Py_TYPE(self), core_module_def());

	return mod ? core_state_of(mod) : NULL;
}

bool transport_is(struct core_state *st, PyObject *o)
{
	return st->transport_type && PyObject_TypeCheck(o, st->transport_type);
}

uint32_t transport_conn(struct core_state *st, PyObject *tr)
{
	return tc(st, tr)->conn;
}

/* ---- reading ---------------------------------------------------------- */

/* Keeps bytes for later, ahead of what is already held (the caller is
 * always handing over the oldest bytes). */
static int hold(struct tcore *t, const uint8_t *data, size_t len, bool front)
{
	PyObject *b;
	int rc;

	if (!t->held || t->held == Py_None) {
		PyObject *l = PyList_New(0);

		if (!l)
			return -1;
		Py_XSETREF(t->held, l);
	}
	b = PyBytes_FromStringAndSize((const char *)data, (Py_ssize_t)len);
	if (!b)
		return -1;
	rc = front ? PyList_Insert(t->held, 0, b) : PyList_Append(t->held, b);
	Py_DECREF(b);
	return rc;
}

static bool has_held(const struct tcore *t)
{
	return t->held && PyList_Check(t->held) && PyList_GET_SIZE(t->held) > 0;
}

/* A protocol callback raised: SystemExit/KeyboardInterrupt go up (-1),
 * anything else to _fatal_error(exc, message), as CPython's transports. */
static int callback_failed(struct core_state *st, PyObject *tr, const char *message)
{
	PyObject *type, *value, *tb, *msg, *r;

	if (PyErr_ExceptionMatches(PyExc_SystemExit) ||
	    PyErr_ExceptionMatches(PyExc_KeyboardInterrupt))
		return -1;
	PyErr_Fetch(&type, &value, &tb);
	PyErr_NormalizeException(&type, &value, &tb);
	if (tb && value)
		PyException_SetTraceback(value, tb);
	msg = PyUnicode_FromString(message);
	r = msg && value ? PyObject_CallMethodObjArgs(tr, st->s_fatal_error, value, msg, NULL)
			 : NULL;
	Py_XDECREF(msg);
	Py_XDECREF(type);
	Py_XDECREF(value);
	Py_XDECREF(tb);
	return core_glue_done(r, tr);
}

/* Hands bytes to the protocol now (the transport is reading and nothing
 * older is held).  0, or -1 for SystemExit/KeyboardInterrupt. */
static int deliver_now(struct core_state *st, PyObject *tr, struct tcore *t,
		       const uint8_t *data, size_t len)
{
	PyObject *proto = t->protocol, *b, *r, *n;
	Py_buffer view;
	size_t off = 0, m;
	int rc = 0;

	if (!proto || proto == Py_None)
		return 0;
	Py_INCREF(proto);
	if (!t->buffered) {
		b = PyBytes_FromStringAndSize((const char *)data, (Py_ssize_t)len);
		r = b ? PyObject_CallMethodOneArg(proto, st->s_data_received, b) : NULL;
		Py_XDECREF(b);
		if (r)
			Py_DECREF(r);
		else
			rc = callback_failed(st, tr,
					     "Fatal error: protocol.data_received() call failed.");
		Py_DECREF(proto);
		return rc;
	}
	/* straight from the packet into the protocol's buffer */
	while (off < len) {
		if (t->conn_lost)
			break;
		if (t->paused) {
			rc = hold(t, data + off, len - off, true) < 0 ? callback_failed(
				st, tr, "Fatal error: holding received data failed.") : 0;
			break;
		}
		n = PyLong_FromSize_t(len - off);
		b = n ? PyObject_CallMethodOneArg(proto, st->s_get_buffer, n) : NULL;
		Py_XDECREF(n);
		if (!b) {
			rc = callback_failed(st, tr, "Fatal error: protocol.get_buffer() call failed.");
			break;
		}
		if (PyObject_GetBuffer(b, &view, PyBUF_WRITABLE) < 0) {
			Py_DECREF(b);
			rc = callback_failed(st, tr, "Fatal error: protocol.get_buffer() call failed.");
			break;
		}
		if (view.len <= 0) {
			PyBuffer_Release(&view);
			Py_DECREF(b);
			PyErr_SetString(PyExc_RuntimeError, "get_buffer() returned an empty buffer");
			rc = callback_failed(st, tr, "Fatal error: protocol.get_buffer() call failed.");
			break;
		}
		m = (size_t)view.len < len - off ? (size_t)view.len : len - off;
		memcpy(view.buf, data + off, m);
		PyBuffer_Release(&view);
		Py_DECREF(b);
		off += m;
		n = PyLong_FromSize_t(m);
		r = n ? PyObject_CallMethodOneArg(proto, st->s_buffer_updated, n) : NULL;
		Py_XDECREF(n);
		if (!r) {
			rc = callback_failed(st, tr,
					     "Fatal error: protocol.buffer_updated() call failed.");
			break;
		}
		Py_DECREF(r);
	}
	Py_DECREF(proto);
	return rc;
}

int transport_deliver(struct core_state *st, PyObject *tr, const uint8_t *data, size_t len)
{
	struct tcore *t;

	if (!transport_is(st, tr))
		return 0;
	t = tc(st, tr);
	if (t->conn_lost)
		return 0;
	if (!t->made || t->paused || has_held(t)) {
		if (hold(t, data, len, false) < 0)
			return callback_failed(st, tr, "Fatal error: holding received data failed.");
		return 0;
	}
	return deliver_now(st, tr, t, data, len);
}

int transport_eof(struct core_state *st, PyObject *tr)
{
	struct tcore *t;
	PyObject *r;

	if (!transport_is(st, tr))
		return 0;
	t = tc(st, tr);
	if (t->conn_lost)
		return 0;
	if (!t->made || t->paused || has_held(t)) {
		t->eof_held = 1;
		return 0;
	}
	r = PyObject_CallMethodNoArgs(tr, st->s_eof_received);
	return core_glue_done(r, tr);
}

/* _deliver(data): held bytes, oldest first (BypassTransport._release_held). */
static PyObject *tc_deliver(PyObject *self, PyObject *data)
{
	struct core_state *st = state_of(self);
	Py_buffer view;
	int rc;

	if (!st)
		return NULL;
	if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0)
		return NULL;
	rc = deliver_now(st, self, tc(st, self), view.buf, (size_t)view.len);
	PyBuffer_Release(&view);
	if (rc < 0)
		return NULL;
	Py_RETURN_NONE;
}

/* ---- writing ---------------------------------------------------------- */

static PyObject *call_self(PyObject *self, PyObject *name, PyObject *a, PyObject *b)
{
	return PyObject_CallMethodObjArgs(self, name, a, b, NULL);
}

/* write(data): asyncio's guards in asyncio's order, then straight into the
 * engine's send queue when nothing is buffered; the rest is Python's. */
static PyObject *write_one(struct core_state *st, PyObject *self, PyObject *data)
{
	struct tcore *t = tc(st, self);
	Py_buffer view;
	PyObject *n_obj, *r;
	int n, empty;

	if (!PyBytes_Check(data) && !PyByteArray_Check(data) && !PyMemoryView_Check(data)) {
		PyErr_Format(PyExc_TypeError,
			     "data argument must be a bytes-like object, not '%.200s'",
			     Py_TYPE(data)->tp_name);
		return NULL;
	}
	if (t->eof) {
		PyErr_SetString(PyExc_RuntimeError, "Cannot call write() after write_eof()");
		return NULL;
	}
	if (t->empty_waiter && t->empty_waiter != Py_None) {
		PyErr_SetString(PyExc_RuntimeError, "unable to write; sendfile is in progress");
		return NULL;
	}
	if (PyBytes_Check(data))
		empty = PyBytes_GET_SIZE(data) == 0;
	else if (PyByteArray_Check(data))
		empty = PyByteArray_GET_SIZE(data) == 0;
	else
		empty = !PyObject_IsTrue(data);
	if (empty)
		Py_RETURN_NONE;
	if (t->conn_lost)
		return PyObject_CallMethodNoArgs(self, st->s_write_lost);
	if (t->buffer_size || !t->pump || t->pump == Py_None)
		goto buffer_all;
	if (PyBytes_CheckExact(data)) {
		/* what nearly every write is: no buffer export to set up */
		n = pump_conn_write(t->pump, t->conn, PyBytes_AS_STRING(data),
				    (size_t)PyBytes_GET_SIZE(data));
		if (n >= 0 && n == PyBytes_GET_SIZE(data))
			Py_RETURN_NONE;
	} else {
		Py_ssize_t len;

		if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0)
			return NULL;
		len = view.len;
		n = pump_conn_write(t->pump, t->conn, view.buf, (size_t)len);
		PyBuffer_Release(&view);
		if (n >= 0 && n == len)
			Py_RETURN_NONE;
	}
	if (n < 0) {
		PyObject *exc = PyObject_CallFunction(PyExc_OSError, "is", -n, strerror(-n));
		PyObject *msg = PyUnicode_FromString("Fatal write error on socket transport");

		r = exc && msg ? call_self(self, st->s_fatal_error, exc, msg) : NULL;
		Py_XDECREF(exc);
		Py_XDECREF(msg);
		if (!r)
			return NULL;
		Py_DECREF(r);
		Py_RETURN_NONE;
	}
	n_obj = PyLong_FromLong(n);
	r = n_obj ? call_self(self, st->s_write_more, data, n_obj) : NULL;
	Py_XDECREF(n_obj);
	return r;

buffer_all:
	n_obj = PyLong_FromLong(0);
	r = n_obj ? call_self(self, st->s_write_more, data, n_obj) : NULL;
	Py_XDECREF(n_obj);
	return r;
}

static PyObject *tc_write(PyObject *self, PyObject *data)
{
	struct core_state *st = state_of(self);

	return st ? write_one(st, self, data) : NULL;
}

static PyObject *tc_writelines(PyObject *self, PyObject *list)
{
	struct core_state *st = state_of(self);
	struct tcore *t;
	PyObject *it, *item, *r;

	if (!st)
		return NULL;
	t = tc(st, self);
	if (t->eof) {
		PyErr_SetString(PyExc_RuntimeError, "Cannot call writelines() after write_eof()");
		return NULL;
	}
	if (t->empty_waiter && t->empty_waiter != Py_None) {
		PyErr_SetString(PyExc_RuntimeError, "unable to writelines; sendfile is in progress");
		return NULL;
	}
	it = PyObject_GetIter(list);
	if (!it)
		return NULL;
	while ((item = PyIter_Next(it))) {
		r = write_one(st, self, item);
		Py_DECREF(item);
		if (!r) {
			Py_DECREF(it);
			return NULL;
		}
		Py_DECREF(r);
	}
	Py_DECREF(it);
	if (PyErr_Occurred())
		return NULL;
	Py_RETURN_NONE;
}

static PyObject *tc_is_closing(PyObject *self, PyObject *unused)
{
	struct core_state *st = state_of(self);

	return st ? PyBool_FromLong(tc(st, self)->closing) : NULL;
}

static PyObject *tc_is_reading(PyObject *self, PyObject *unused)
{
	struct core_state *st = state_of(self);
	struct tcore *t;

	if (!st)
		return NULL;
	t = tc(st, self);
	return PyBool_FromLong(!t->closing && !t->paused);
}

static PyObject *tc_get_write_buffer_size(PyObject *self, PyObject *unused)
{
	struct core_state *st = state_of(self);

	return st ? PyLong_FromSsize_t(tc(st, self)->buffer_size) : NULL;
}

/* _setopt(opt, value): a connection option (SL_OPT_*), 0 or -errno; what
 * BypassSocket.setsockopt and Tornado's set_nodelay (per response) call. */
static PyObject *tc_setopt(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
	struct core_state *st = state_of(self);
	struct tcore *t;
	long opt, value;

	if (!st)
		return NULL;
	t = tc(st, self);
	if (nargs != 2) {
		PyErr_SetString(PyExc_TypeError, "_setopt(opt, value)");
		return NULL;
	}
	opt = PyLong_AsLong(args[0]);
	if (opt == -1 && PyErr_Occurred())
		return NULL;
	value = PyLong_AsLong(args[1]);
	if (value == -1 && PyErr_Occurred())
		return NULL;
	if (opt < INT_MIN || opt > INT_MAX || value < INT_MIN || value > INT_MAX)
		return PyLong_FromLong(-EINVAL);
	if (!t->pump || t->pump == Py_None)
		return PyLong_FromLong(-EBADF);
	return PyLong_FromLong(pump_conn_setopt(t->pump, t->conn, (int)opt, (int)value));
}

static PyMethodDef tc_methods[] = {
	{ "write", tc_write, METH_O, "asyncio's Transport.write: copied into the engine's send queue." },
	{ "writelines", tc_writelines, METH_O, "write() for each item." },
	{ "is_closing", tc_is_closing, METH_NOARGS, NULL },
	{ "is_reading", tc_is_reading, METH_NOARGS, NULL },
	{ "get_write_buffer_size", tc_get_write_buffer_size, METH_NOARGS, NULL },
	{ "_deliver", tc_deliver, METH_O, "Hands held bytes to the protocol." },
	{ "_setopt", (PyCFunction)(void (*)(void))tc_setopt, METH_FASTCALL,
	  "_setopt(opt, value): a connection option; 0, or a negative errno." },
	{ NULL, NULL, 0, NULL },
};

/* ---- the type ----------------------------------------------------------- */

static void visit_or_clear_base(struct core_state *st, PyObject *self, visitproc visit,
				void *arg, int *err)
{
	int i;

	for (i = 0; i < st->nbase_slots; i++) {
		PyObject **slot = (PyObject **)((char *)self + st->base_slots[i]);

		if (visit) {
			if (*slot && !*err)
				*err = visit(*slot, arg);
		} else {
			Py_CLEAR(*slot);
		}
	}
}

static int tc_traverse(PyObject *self, visitproc visit, void *arg)
{
	struct core_state *st = state_of(self);
	struct tcore *t;
	int err = 0;

	Py_VISIT(Py_TYPE(self));
	if (!st)
		return 0;
	t = tc(st, self);
	Py_VISIT(t->pump);
	Py_VISIT(t->protocol);
	Py_VISIT(t->held);
	Py_VISIT(t->empty_waiter);
	visit_or_clear_base(st, self, visit, arg, &err);
	return err;
}

static int tc_clear(PyObject *self)
{
	struct core_state *st = state_of(self);
	struct tcore *t;
	int err = 0;

	if (!st)
		return 0;
	t = tc(st, self);
	Py_CLEAR(t->pump);
	Py_CLEAR(t->protocol);
	Py_CLEAR(t->held);
	Py_CLEAR(t->empty_waiter);
	visit_or_clear_base(st, self, NULL, NULL, &err);
	return 0;
}

static void tc_dealloc(PyObject *self)
{
	PyTypeObject *tp = Py_TYPE(self);

	PyObject_GC_UnTrack(self);
	tc_clear(self);
	tp->tp_free(self);
	Py_DECREF(tp);
}

/* The object slots of the base chain, which our dealloc/traverse own. */
static int find_base_slots(struct core_state *st, PyTypeObject *base)
{
	PyObject *mro = base->tp_mro;
	Py_ssize_t i, j;

	for (i = 0; mro && i < PyTuple_GET_SIZE(mro); i++) {
		PyTypeObject *cls = (PyTypeObject *)PyTuple_GET_ITEM(mro, i);
		PyObject *slots, *seq;

		if (cls == &PyBaseObject_Type)
			continue;
		slots = PyDict_GetItemString(cls->tp_dict, "__slots__");	/* borrowed */
		if (!slots)
			continue;
		if (PyUnicode_Check(slots))
			seq = PyTuple_Pack(1, slots);
		else
			seq = PySequence_Tuple(slots);
		if (!seq)
			return -1;
		for (j = 0; j < PyTuple_GET_SIZE(seq); j++) {
			PyObject *d = PyDict_GetItem(cls->tp_dict, PyTuple_GET_ITEM(seq, j));
			PyMemberDef *m;

			if (!d || !PyObject_TypeCheck(d, &PyMemberDescr_Type))
				continue;
			m = ((PyMemberDescrObject *)d)->d_member;
			if (m->type != T_OBJECT_EX)
				continue;
			if (st->nbase_slots == CORE_MAX_BASE_SLOTS) {
				Py_DECREF(seq);
				PyErr_SetString(PyExc_ImportError,
						"specloop._core: asyncio's transport has too many slots");
				return -1;
			}
			st->base_slots[st->nbase_slots++] = m->offset;
		}
		Py_DECREF(seq);
	}
	return 0;
}

#define TC_MEMBER(name, type, field, doc) \
	{ name, type, offsetof(struct tcore, field), 0, doc }

int transport_init(PyObject *module, struct core_state *st)
{
	PyMemberDef members[] = {
		TC_MEMBER("_pump", T_OBJECT, pump, "the engine's Pump; None once gone"),
		TC_MEMBER("_protocol", T_OBJECT, protocol, NULL),
		TC_MEMBER("_held", T_OBJECT, held, "received bytes not handed over yet"),
		TC_MEMBER("_empty_waiter", T_OBJECT, empty_waiter, NULL),
		TC_MEMBER("_buffer_size", T_PYSSIZET, buffer_size, NULL),
		TC_MEMBER("_conn_lost", T_INT, conn_lost, NULL),
		TC_MEMBER("_conn", T_UINT, conn, "the engine's connection id"),
		TC_MEMBER("_closing", T_BOOL, closing, NULL),
		TC_MEMBER("_paused", T_BOOL, paused, NULL),
		TC_MEMBER("_eof", T_BOOL, eof, NULL),
		TC_MEMBER("_gone", T_BOOL, gone, "the engine freed the connection"),
		TC_MEMBER("_made", T_BOOL, made, "connection_made() has run"),
		TC_MEMBER("_buffered", T_BOOL, buffered, "the protocol is a BufferedProtocol"),
		TC_MEMBER("_eof_held", T_BOOL, eof_held, NULL),
		{ NULL, 0, 0, 0, NULL },
	};
	PyType_Slot slots[] = {
		{ Py_tp_dealloc, tc_dealloc },
		{ Py_tp_traverse, tc_traverse },
		{ Py_tp_clear, tc_clear },
		{ Py_tp_methods, tc_methods },
		{ Py_tp_members, members },
		{ Py_tp_doc, "The C base of specloop's BypassTransport (native/py/transport.c)." },
		{ 0, NULL },
	};
	PyType_Spec spec = {
		.name = "specloop._core.TransportCore",
		.flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
		.slots = slots,
	};
	PyObject *m = PyImport_ImportModule("asyncio.transports"), *base;
	size_t i;

	if (!m)
		return -1;
	base = PyObject_GetAttrString(m, "_FlowControlMixin");
	Py_DECREF(m);
	if (!base)
		return -1;
	if (!PyType_Check(base) || ((PyTypeObject *)base)->tp_dictoffset ||
	    ((PyTypeObject *)base)->tp_itemsize) {
		Py_DECREF(base);
		PyErr_SetString(PyExc_ImportError,
				"specloop._core: asyncio's _FlowControlMixin is not a slotted class");
		return -1;
	}
	if (find_base_slots(st, (PyTypeObject *)base) < 0) {
		Py_DECREF(base);
		return -1;
	}
	st->tc_offset = (((PyTypeObject *)base)->tp_basicsize + 7) & ~(Py_ssize_t)7;
	spec.basicsize = (int)(st->tc_offset + (Py_ssize_t)sizeof(struct tcore));
	for (i = 0; members[i].name; i++)
		members[i].offset += st->tc_offset;
	st->transport_type = (PyTypeObject *)PyType_FromModuleAndSpec(module, &spec, base);
	Py_DECREF(base);
	if (!st->transport_type)
		return -1;
	return PyModule_AddObjectRef(module, "TransportCore", (PyObject *)st->transport_type);
}
