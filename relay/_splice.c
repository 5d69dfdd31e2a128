/*
 * relay._splice: the splice's steady state (data frames both ways) on a thread of its own.
 *
 * Why: a relayed round trip crosses the gateway twice, and in Python each crossing costs a reactor
 * wake-up, a read, a frame rewrite and a send in the interpreter. Measured, a Twisted process that only
 * forwards bytes already adds more to the p99 than the latency target allows (docs/benchmarks.md). The
 * thread (_splice_pump.c) does the work of relay.hybrid.frames.FrameRelay (_splice_frames.c) and of the
 * splice's reads and writes, without the interpreter and without the GIL.
 *
 * What it does not do, it hands back: at the first frame that is not a well-formed data frame (a ping, a
 * close, a broken header), at end of file and at a socket error, it stops watching the pair and signals
 * Python (an eventfd), which takes the pair back with every byte the thread held and the rewriter's
 * state, and carries on in relay.hybrid.bridge as if it had read them itself. So the rules for control
 * frames, closing and errors exist once, in Python.
 *
 * Sockets: the thread uses the legs' descriptors and never closes them. Python takes a pair back before
 * it closes either leg (relay.hybrid.bridge wraps the transports' connectionLost), so a descriptor is
 * never closed, and its number never reused, while the thread may still use it. (Copies made with dup()
 * would double the descriptors an idle pair costs, against the same process limit.)
 *
 * Back-pressure: per direction the thread holds at most one read (what the other leg's socket did not
 * take); while it does, it stops reading the leg those bytes came from, as the Python splice does.
 *
 * This file is the Python side: the Pump type and the rewriter alone (for tests).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "_splice_codec.h"
#include "_splice_frames.h"
#include "_splice_pump.h"

typedef struct {
    PyObject_HEAD
    PumpCore core;
    int opened;
} Pump;

/* Take the pump's lock, letting other Python threads run if the pump's thread holds it. */
static void lock(Pump *self)
{
    if (pthread_mutex_trylock(&self->core.lock) == 0)
        return;
    Py_BEGIN_ALLOW_THREADS
    pthread_mutex_lock(&self->core.lock);
    Py_END_ALLOW_THREADS
}

static void unlock(Pump *self) { pthread_mutex_unlock(&self->core.lock); }

static int handle_from(PyObject *arg, uint64_t *handle)
{
    *handle = PyLong_AsUnsignedLongLong(arg);
    return PyErr_Occurred() ? -1 : 0;
}

/* ---------------------------------------------------------------- state tuples */

/* (remaining, mask, offset, in_message, held) -> FrameState */
static int frames_from(PyObject *tuple, FrameState *state)
{
    unsigned long long remaining;
    Py_buffer mask, held;
    unsigned offset;
    int in_message;
    if (!PyArg_ParseTuple(tuple, "Ky*Ipy*", &remaining, &mask, &offset, &in_message, &held))
        return -1;
    int ok = (mask.len == 0 || mask.len == 4) && offset < 4 && held.len < SPLICE_MAX_HELD &&
             (remaining == 0 || mask.len == 4);
    if (ok) {
        memset(state, 0, sizeof *state);
        state->remaining = remaining;
        if (mask.len)
            memcpy(state->mask, mask.buf, 4);
        state->offset = offset;
        state->in_message = in_message;
        memcpy(state->held, held.buf, (size_t)held.len);
        state->held_len = (unsigned)held.len;
    }
    PyBuffer_Release(&mask);
    PyBuffer_Release(&held);
    if (!ok) {
        PyErr_SetString(PyExc_ValueError, "invalid rewriter state");
        return -1;
    }
    return 0;
}

static PyObject *frames_tuple(const FrameState *state)
{
    int framing = state->remaining != 0; /* the mask and offset matter only inside a frame */
    return Py_BuildValue("(Ky#INy#)", (unsigned long long)state->remaining, (const char *)state->mask,
                         (Py_ssize_t)(framing ? 4 : 0), framing ? state->offset : 0u,
                         PyBool_FromLong(state->in_message), (const char *)state->held,
                         (Py_ssize_t)state->held_len);
}

/* ---------------------------------------------------------------- the Pump type */

static PyObject *Pump_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *keywords[] = {"read_size", NULL};
    Py_ssize_t read_size = 262144;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|n", keywords, &read_size))
        return NULL;
    if (read_size < 1024 || read_size > (64 << 20)) {
        PyErr_SetString(PyExc_ValueError, "read_size must be from 1 KiB to 64 MiB");
        return NULL;
    }
    Pump *self = (Pump *)type->tp_alloc(type, 0);
    if (!self)
        return NULL;
    self->opened = 1;
    if (pump_open(&self->core, (size_t)read_size) < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static void Pump_dealloc(Pump *self)
{
    if (self->opened) {
        Py_BEGIN_ALLOW_THREADS
        pump_close(&self->core);
        Py_END_ALLOW_THREADS
    }
    Py_TYPE(self)->tp_free((PyObject *)self);
}

PyDoc_STRVAR(Pump_add_doc,
             "add(sender_fd, listener_fd, sender_state, listener_state) -> handle\n\n"
             "Relay between the two sockets on the pump's thread (it never closes them). Each state is\n"
             "(remaining, mask, offset, in_message, held) of the rewriter reading that leg.");

static PyObject *Pump_add(Pump *self, PyObject *args)
{
    int fds[2];
    PyObject *states[2];
    if (!PyArg_ParseTuple(args, "iiO!O!", &fds[0], &fds[1], &PyTuple_Type, &states[0], &PyTuple_Type, &states[1]))
        return NULL;
    Pair *pair = calloc(1, sizeof *pair);
    if (!pair)
        return PyErr_NoMemory();
    for (int side = 0; side < 2; side++) {
        if (frames_from(states[side], &pair->dir[side].frames) < 0) {
            pair_free(pair);
            return NULL;
        }
        if (fcntl(fds[side], F_GETFD) < 0) {
            pair_free(pair);
            return PyErr_SetFromErrno(PyExc_OSError);
        }
        pair->fd[side] = fds[side];
    }
    uint64_t handle;
    lock(self);
    int failed = pump_add(&self->core, pair, &handle);
    unlock(self);
    if (failed) {
        pair_free(pair);
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    return PyLong_FromUnsignedLongLong(handle);
}

PyDoc_STRVAR(Pump_take_doc,
             "take(handle) -> (reason, sender, listener)\n\n"
             "Stop relaying the pair and give back everything the thread held. reason: 0 taken while\n"
             "relaying, 1 a frame for Python, 2 end of file, 3 socket error, 4 bytes lost for want of\n"
             "memory (the pair cannot go on). Each side is (state, leftover,\n"
             "pending, read_bytes, relayed_bytes): leftover is input from that leg not yet rewritten,\n"
             "pending rewritten bytes from that leg not yet sent to the other.");

static PyObject *Pump_take(Pump *self, PyObject *arg)
{
    uint64_t handle;
    if (handle_from(arg, &handle) < 0)
        return NULL;
    lock(self);
    Pair *pair = pump_remove(&self->core, handle);
    unlock(self);
    if (!pair) {
        PyErr_SetString(PyExc_KeyError, "no such pair");
        return NULL;
    }
    PyObject *sides[2] = {NULL, NULL};
    for (int side = 0; side < 2; side++) {
        Direction *d = &pair->dir[side];
        PyObject *state = frames_tuple(&d->frames);
        if (!state)
            break;
        sides[side] = Py_BuildValue("(Ny#y#KK)", state, d->leftover ? d->leftover : "", (Py_ssize_t)d->leftover_len,
                                    d->pending ? d->pending : "", (Py_ssize_t)d->pending_len,
                                    (unsigned long long)d->read_bytes, (unsigned long long)d->relayed_bytes);
        if (!sides[side])
            break;
    }
    int reason = pair->reason;
    pair_free(pair);
    if (!sides[0] || !sides[1]) {
        Py_XDECREF(sides[0]);
        Py_XDECREF(sides[1]);
        return NULL;
    }
    return Py_BuildValue("(iNN)", reason, sides[0], sides[1]);
}

PyDoc_STRVAR(Pump_ejected_doc, "ejected() -> list of handles the thread stopped relaying since the last call");

static PyObject *Pump_ejected(Pump *self, PyObject *Py_UNUSED(ignored))
{
    uint64_t drained;
    ssize_t ignored = read(self->core.notify_fd, &drained, sizeof drained); /* reset the signal */
    (void)ignored;
    lock(self);
    HandleList *ejected = &self->core.ejected;
    PyObject *result = PyList_New((Py_ssize_t)ejected->len);
    for (size_t k = 0; result && k < ejected->len; k++) {
        PyObject *handle = PyLong_FromUnsignedLongLong(ejected->items[k]);
        if (!handle) {
            Py_CLEAR(result);
            break;
        }
        PyList_SET_ITEM(result, (Py_ssize_t)k, handle);
    }
    if (result)
        ejected->len = 0;
    unlock(self);
    return result;
}

PyDoc_STRVAR(Pump_collect_doc,
             "collect() -> [(handle, sender read, listener read, sender relayed, listener relayed)]\n\n"
             "The byte counts of pairs that moved bytes since the last call, reset.");

static PyObject *Pump_collect(Pump *self, PyObject *Py_UNUSED(ignored))
{
    lock(self);
    HandleList *dirty = &self->core.dirty;
    PyObject *result = PyList_New(0);
    for (size_t k = 0; result && k < dirty->len; k++) {
        Pair *pair = pump_find(&self->core, dirty->items[k]);
        if (!pair)
            continue; /* taken back since: take gave its counts */
        Direction *d = pair->dir;
        PyObject *item = Py_BuildValue("(KKKKK)", (unsigned long long)dirty->items[k],
                                       (unsigned long long)d[0].read_bytes, (unsigned long long)d[1].read_bytes,
                                       (unsigned long long)d[0].relayed_bytes, (unsigned long long)d[1].relayed_bytes);
        if (!item || PyList_Append(result, item) < 0) {
            Py_XDECREF(item);
            Py_CLEAR(result);
            break;
        }
        Py_DECREF(item);
        pair->dirty = 0;
        d[0].read_bytes = d[1].read_bytes = d[0].relayed_bytes = d[1].relayed_bytes = 0;
    }
    if (result)
        dirty->len = 0;
    unlock(self);
    return result;
}

PyDoc_STRVAR(Pump_buffered_doc, "buffered(handle) -> bytes the thread holds for the pair");

static PyObject *Pump_buffered(Pump *self, PyObject *arg)
{
    uint64_t handle;
    if (handle_from(arg, &handle) < 0)
        return NULL;
    lock(self);
    Pair *pair = pump_find(&self->core, handle);
    size_t total = 0;
    for (int side = 0; pair && side < 2; side++) {
        Direction *d = &pair->dir[side];
        total += d->pending_len + d->leftover_len + d->frames.held_len;
    }
    unlock(self);
    if (!pair) {
        PyErr_SetString(PyExc_KeyError, "no such pair");
        return NULL;
    }
    return PyLong_FromSize_t(total);
}

static PyObject *Pump_fileno(Pump *self, PyObject *Py_UNUSED(ignored)) { return PyLong_FromLong(self->core.notify_fd); }

static PyObject *Pump_pairs(Pump *self, PyObject *Py_UNUSED(ignored))
{
    lock(self);
    size_t active = self->core.active;
    unlock(self);
    return PyLong_FromSize_t(active);
}

static PyMethodDef Pump_methods[] = {
    {"add", (PyCFunction)Pump_add, METH_VARARGS, Pump_add_doc},
    {"take", (PyCFunction)Pump_take, METH_O, Pump_take_doc},
    {"ejected", (PyCFunction)Pump_ejected, METH_NOARGS, Pump_ejected_doc},
    {"collect", (PyCFunction)Pump_collect, METH_NOARGS, Pump_collect_doc},
    {"buffered", (PyCFunction)Pump_buffered, METH_O, Pump_buffered_doc},
    {"fileno", (PyCFunction)Pump_fileno, METH_NOARGS, "the descriptor that turns readable when pairs are ejected"},
    {"pairs", (PyCFunction)Pump_pairs, METH_NOARGS, "how many pairs the pump holds (relaying or ejected)"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject PumpType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "relay._splice.Pump",
    .tp_basicsize = sizeof(Pump),
    .tp_dealloc = (destructor)Pump_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = PyDoc_STR("Pump(read_size=262144): a thread relaying the data frames of spliced pairs"),
    .tp_methods = Pump_methods,
    .tp_new = Pump_new,
};

/* ---------------------------------------------------------------- the rewriter alone, for tests */

PyDoc_STRVAR(rewrite_doc, "rewrite(state, data) -> (output, stop, state)\n\n"
                          "What the thread does to one read: rewrite data (after the state's held bytes);\n"
                          "stop is the index into held + data of the first frame left for Python, or -1.");

static PyObject *module_rewrite(PyObject *Py_UNUSED(module), PyObject *args)
{
    PyObject *tuple;
    Py_buffer data;
    FrameState state;
    if (!PyArg_ParseTuple(args, "O!y*", &PyTuple_Type, &tuple, &data))
        return NULL;
    if (frames_from(tuple, &state) < 0) {
        PyBuffer_Release(&data);
        return NULL;
    }
    size_t total = SPLICE_HEADROOM + (size_t)data.len;
    unsigned char *buf = malloc(total);
    if (!buf) {
        PyBuffer_Release(&data);
        return PyErr_NoMemory();
    }
    size_t start = SPLICE_HEADROOM - state.held_len;
    memcpy(buf + start, state.held, state.held_len);
    memcpy(buf + SPLICE_HEADROOM, data.buf, (size_t)data.len);
    PyBuffer_Release(&data);
    state.held_len = 0;
    size_t stop;
    size_t n = splice_rewrite(&state, buf, start, total, &stop);
    Py_ssize_t stop_index = stop < total ? (Py_ssize_t)(stop - start) : -1;
    PyObject *result = Py_BuildValue("(y#nN)", (const char *)buf + start, (Py_ssize_t)n, stop_index, frames_tuple(&state));
    free(buf);
    return result;
}

PyDoc_STRVAR(read_frame_doc, "read_frame(buffer, offset, masked, max_payload, binary=False) -> (end, payload)\n\n"
                             "relay.wsframes.py_read_frame, in C (_splice_codec.c).");
PyDoc_STRVAR(xor_move_doc, "xor_move(view, to, at, n, key) -> None\n\n"
                           "relay.wsframes.py_xor_move, in C (_splice_codec.c): to <= at, writable view.");

PyDoc_STRVAR(build_frame_doc, "build_frame(payload, first_byte, key) -> bytes\n\n"
                              "One whole frame: the header in the shortest length form, then the payload,\n"
                              "masked with key (4 bytes) when key is not None (relay.wsframes.py_build_frame).");

static PyMethodDef module_methods[] = {
    {"rewrite", module_rewrite, METH_VARARGS, rewrite_doc},
    {"read_frame", (PyCFunction)(void (*)(void))codec_read_frame, METH_VARARGS | METH_KEYWORDS, read_frame_doc},
    {"xor_move", codec_xor_move, METH_VARARGS, xor_move_doc},
    {"build_frame", codec_build_frame, METH_VARARGS, build_frame_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "relay._splice", "The splice's data frames on a thread of their own.", -1, module_methods,
};

PyMODINIT_FUNC PyInit__splice(void)
{
    if (PyType_Ready(&PumpType) < 0)
        return NULL;
    PyObject *module = PyModule_Create(&module_def);
    if (!module)
        return NULL;
    Py_INCREF(&PumpType);
    if (PyModule_AddObject(module, "Pump", (PyObject *)&PumpType) < 0) {
        Py_DECREF(&PumpType);
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
