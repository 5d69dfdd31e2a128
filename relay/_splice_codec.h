/* relay._splice's frame codec for Python (see _splice_codec.c): read_frame, xor_move and build_frame of relay.wsframes. */
#ifndef RELAY_SPLICE_CODEC_H
#define RELAY_SPLICE_CODEC_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* read_frame(buffer, offset, masked, max_payload, binary=False) -> (end, payload or None) */
PyObject *codec_read_frame(PyObject *module, PyObject *args, PyObject *kwargs);

/* xor_move(view, to, at, n, key) -> None: view[to:to+n] = view[at:at+n] XOR key repeated */
PyObject *codec_xor_move(PyObject *module, PyObject *args);

/* build_frame(payload, first_byte, key or None) -> bytes: one whole frame, masked with key when given */
PyObject *codec_build_frame(PyObject *module, PyObject *args);

#endif
