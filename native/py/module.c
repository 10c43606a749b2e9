/* SPDX-License-Identifier: MIT */
/*
 * module.c - specloop._core: module state, what it looks up in asyncio once,
 * and the helpers the three types share.
 */
#include "pycore.h"

#include <structmember.h>
#include <time.h>

struct core_state *core_state_of(PyObject *module)
{
	return (struct core_state *)PyModule_GetState(module);
}

int core_glue_done(PyObject *result, PyObject *where)
{
	if (result) {
		Py_DECREF(result);
		return 0;
	}
	if (PyErr_ExceptionMatches(PyExc_SystemExit) ||
	    PyErr_ExceptionMatches(PyExc_KeyboardInterrupt))
		return -1;
	PyErr_WriteUnraisable(where);
	return 0;
}

uint64_t core_monotonic_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* As time.monotonic(): CLOCK_MONOTONIC in seconds. */
double core_monotonic(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

PyObject *core_call_with_self(PyObject *func, PyObject *self, PyObject *const *args,
			      size_t nargsf, PyObject *kwnames)
{
	Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
	Py_ssize_t total = nargs + (kwnames ? PyTuple_GET_SIZE(kwnames) : 0);
	PyObject *small[16], **all = small, *res;

	if (total + 1 > (Py_ssize_t)(sizeof(small) / sizeof(small[0]))) {
		all = PyMem_Malloc((size_t)(total + 1) * sizeof(PyObject *));
		if (!all)
			return PyErr_NoMemory();
	}
	all[0] = self;
	if (total)
		memcpy(all + 1, args, (size_t)total * sizeof(PyObject *));
	res = PyObject_Vectorcall(func, all, (size_t)nargs + 1, kwnames);
	if (all != small)
		PyMem_Free(all);
	return res;
}

/* The offset of an object slot (__slots__ entry) of a Python class. */
static int slot_offset(PyTypeObject *tp, const char *name, Py_ssize_t *out)
{
	PyObject *d = PyDict_GetItemString(tp->tp_dict, name);	/* borrowed */
	PyMemberDef *m;

	if (!d || !PyObject_TypeCheck(d, &PyMemberDescr_Type)) {
		PyErr_Format(PyExc_ImportError,
			     "specloop._core: %s.%s is not a slot in this Python's asyncio",
			     tp->tp_name, name);
		return -1;
	}
	m = ((PyMemberDescrObject *)d)->d_member;
	if (m->type != T_OBJECT_EX) {
		PyErr_Format(PyExc_ImportError, "specloop._core: %s.%s: unexpected slot kind",
			     tp->tp_name, name);
		return -1;
	}
	*out = m->offset;
	return 0;
}

static PyObject *import_attr(const char *module, const char *name)
{
	PyObject *m = PyImport_ImportModule(module), *v;

	if (!m)
		return NULL;
	v = PyObject_GetAttrString(m, name);
	Py_DECREF(m);
	return v;
}

static int look_up_asyncio(struct core_state *st)
{
	PyObject *base;
	struct { const char *name; Py_ssize_t *off; } hs[] = {
		{ "_callback", &st->h_callback }, { "_args", &st->h_args },
		{ "_cancelled", &st->h_cancelled }, { "_loop", &st->h_loop },
		{ "_source_traceback", &st->h_source_tb }, { "_repr", &st->h_repr },
		{ "_context", &st->h_context },
	};
	size_t i;

	st->handle_type = (PyTypeObject *)import_attr("asyncio.events", "Handle");
	st->timer_type = (PyTypeObject *)import_attr("asyncio.events", "TimerHandle");
	if (!st->handle_type || !st->timer_type)
		return -1;
	if (!PyType_Check(st->handle_type) || !PyType_Check(st->timer_type)) {
		PyErr_SetString(PyExc_ImportError, "specloop._core: asyncio's Handle is not a class");
		return -1;
	}
	for (i = 0; i < sizeof(hs) / sizeof(hs[0]); i++)
		if (slot_offset(st->handle_type, hs[i].name, hs[i].off))
			return -1;
	if (slot_offset(st->timer_type, "_when", &st->t_when) ||
	    slot_offset(st->timer_type, "_scheduled", &st->t_scheduled))
		return -1;

	base = import_attr("asyncio.base_events", "BaseEventLoop");
	if (!base)
		return -1;
	st->base_call_soon = PyObject_GetAttrString(base, "call_soon");
	st->base_call_at = PyObject_GetAttrString(base, "call_at");
	st->base_call_later = PyObject_GetAttrString(base, "call_later");
	st->base_call_soon_internal = PyObject_GetAttrString(base, "_call_soon");
	st->base_create_task = PyObject_GetAttrString(base, "create_task");
	st->base_asyncgen_firstiter = PyObject_GetAttrString(base, "_asyncgen_firstiter_hook");
	Py_DECREF(base);
	if (!st->base_call_soon || !st->base_call_at || !st->base_call_later ||
	    !st->base_call_soon_internal || !st->base_create_task ||
	    !st->base_asyncgen_firstiter)
		return -1;
	st->future_type = import_attr("asyncio.futures", "Future");
	st->task_type = import_attr("asyncio.tasks", "Task");
	st->kw_loop = Py_BuildValue("(s)", "loop");
	st->kw_task = Py_BuildValue("(sss)", "loop", "name", "context");
	if (!st->future_type || !st->task_type || !st->kw_loop || !st->kw_task)
		return -1;
	return 0;
}

static int intern_names(struct core_state *st)
{
	struct { PyObject **slot; const char *s; } names[] = {
		{ &st->s_run, "_run" }, { &st->s_select, "select" },
		{ &st->s_process_events, "_process_events" }, { &st->s_selector, "_selector" },
		{ &st->s_current_handle, "_current_handle" }, { &st->s_append, "append" },
		{ &st->s_popleft, "popleft" }, { &st->s_data_received, "data_received" },
		{ &st->s_get_buffer, "get_buffer" }, { &st->s_buffer_updated, "buffer_updated" },
		{ &st->s_fatal_error, "_fatal_error" }, { &st->s_eof_received, "_eof_received" },
		{ &st->s_write_ready, "_write_ready" }, { &st->s_closed_event, "_closed_event" },
		{ &st->s_returned_event, "_returned_event" },
		{ &st->s_accept, "_accept" }, { &st->s_write_more, "_write_more" },
		{ &st->s_write_lost, "_write_lost" }, { &st->s_context, "context" },
		{ &st->s_callback, "callback" }, { &st->s_release_held, "_release_held" },
		{ &st->s_name, "name" }, { &st->s_task_factory, "_task_factory" },
		{ &st->s_asyncgens, "_asyncgens" },
		{ &st->s_asyncgens_shutdown_called, "_asyncgens_shutdown_called" },
		{ &st->s_add, "add" },
	};
	size_t i;

	for (i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		*names[i].slot = PyUnicode_InternFromString(names[i].s);
		if (!*names[i].slot)
			return -1;
	}
	return 0;
}

/* configure(report_error, log_slow): the Python helpers the core calls for
 * what is rare and must read exactly as asyncio's (error reports). */
static PyObject *core_configure(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
	struct core_state *st = core_state_of(module);

	if (nargs != 2 || !PyCallable_Check(args[0]) || !PyCallable_Check(args[1])) {
		PyErr_SetString(PyExc_TypeError, "configure(report_error, log_slow): two callables");
		return NULL;
	}
	Py_INCREF(args[0]);
	Py_XSETREF(st->report_error, args[0]);
	Py_INCREF(args[1]);
	Py_XSETREF(st->log_slow, args[1]);
	Py_RETURN_NONE;
}

static PyMethodDef core_methods[] = {
	{ "configure", (PyCFunction)(void (*)(void))core_configure, METH_FASTCALL,
	  "configure(report_error, log_slow): helpers for error reports." },
	{ NULL, NULL, 0, NULL },
};

static int core_exec(PyObject *module)
{
	struct core_state *st = core_state_of(module);

	if (intern_names(st) || look_up_asyncio(st))
		return -1;
	if (loopcore_init_type(module, st) || loopcore_init_timer_type(module, st) ||
	    pump_init_type(module, st) || transport_init(module, st))
		return -1;
	return 0;
}

#define STATE_OBJECTS(X) \
	X(loop_type) X(pump_type) X(transport_type) X(handle_type) X(timer_type) X(ctimer_type) \
	X(base_call_soon) X(base_call_at) X(base_call_later) X(base_call_soon_internal) \
	X(report_error) X(log_slow) X(s_run) X(s_select) X(s_process_events) X(s_selector) \
	X(s_current_handle) X(s_append) X(s_popleft) X(s_data_received) X(s_get_buffer) \
	X(s_buffer_updated) X(s_fatal_error) X(s_eof_received) X(s_write_ready) \
	X(s_closed_event) X(s_returned_event) X(s_accept) X(s_write_more) X(s_write_lost) X(s_context) \
	X(s_callback) X(s_release_held) X(s_name) X(s_task_factory) X(base_create_task) \
	X(base_asyncgen_firstiter) X(s_asyncgens) X(s_asyncgens_shutdown_called) X(s_add) \
	X(future_type) X(task_type) X(kw_loop) X(kw_task)

static int core_traverse(PyObject *module, visitproc visit, void *arg)
{
	struct core_state *st = core_state_of(module);

	if (!st)
		return 0;
#define VISIT(f) Py_VISIT(st->f);
	STATE_OBJECTS(VISIT)
#undef VISIT
	return 0;
}

static int core_clear(PyObject *module)
{
	struct core_state *st = core_state_of(module);

	if (!st)
		return 0;
#define CLEAR(f) Py_CLEAR(st->f);
	STATE_OBJECTS(CLEAR)
#undef CLEAR
	return 0;
}

static void core_free(void *module)
{
	core_clear((PyObject *)module);
}

static PyModuleDef_Slot core_slots[] = {
	{ Py_mod_exec, core_exec },
	{ 0, NULL },
};

static struct PyModuleDef core_def = {
	PyModuleDef_HEAD_INIT,
	.m_name = "specloop._core",
	.m_doc = "specloop's loop core in C: the run loop, the engine pump, the transport's hot path.",
	.m_size = sizeof(struct core_state),
	.m_methods = core_methods,
	.m_slots = core_slots,
	.m_traverse = core_traverse,
	.m_clear = core_clear,
	.m_free = core_free,
};

PyModuleDef *core_module_def(void)
{
	return &core_def;
}

PyMODINIT_FUNC PyInit__core(void)
{
	return PyModuleDef_Init(&core_def);
}
