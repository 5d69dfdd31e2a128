/*
 * relay._splice's frame codec for Python: relay.wsframes' read_frame, xor_move and build_frame, in C.
 *
 * Why: every message a control channel carries (a relayed HTTP request's answer is two: the response
 * JSON and its body) is picked out of a read by read_frame and unmasked by xor_move. In Python that is
 * a dozen interpreter steps per frame, about a thirtieth of what the gateway spends on a relayed
 * request; here it is one call, and every message sent is framed by one (build_frame). Header lengths
 * are read and written with the rewriter's helpers (_splice_frames.h). The Python functions (py_read_frame,
 * py_xor_move, py_build_frame) stay as the reference (relay.wsframes uses them
 * where this extension is not built), and a Hypothesis test holds the two to the same answers.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <string.h>

#include "_splice_codec.h"
#include "_splice_frames.h"

#define FIN_TEXT 0x81
#define FIN_BINARY 0x82
#define MASKED 0x80
#define FAST_PAYLOAD_LIMIT (1024 * 1024) /* relay.wsframes.FAST_PAYLOAD_LIMIT */
#define WAIT_LIMIT (64 * 1024)           /* relay.wsframes.WAIT_LIMIT */
#define INCOMPLETE 0
#define HAND_OVER (-1)

static PyObject *result(Py_ssize_t end, PyObject *payload)
{
    if (payload == NULL)
        return Py_BuildValue("(nO)", end, Py_None);
    return Py_BuildValue("(nN)", end, payload);
}

PyObject *codec_read_frame(PyObject *Py_UNUSED(module), PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"buffer", "offset", "masked", "max_payload", "binary", NULL};
    Py_buffer view;
    Py_ssize_t offset;
    int masked, binary = 0;
    long long max_payload;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "y*npL|p", keywords, &view, &offset, &masked, &max_payload,
                                     &binary))
        return NULL;
    PyObject *out = NULL;
    const unsigned char *buf = view.buf;
    Py_ssize_t size = view.len;
    if (offset < 0) {
        PyErr_SetString(PyExc_ValueError, "offset must not be negative");
        goto done;
    }
    if (offset > size || size - offset < 2) {
        out = result(INCOMPLETE, NULL);
        goto done;
    }
    unsigned char first = buf[offset], second = buf[offset + 1];
    uint64_t length = 0;
    int head = frame_length(buf + offset, (size_t)(size - offset), &length); /* before the key */
    if (head == 0) {
        out = result(INCOMPLETE, NULL);
        goto done;
    }
    if (head < 0) { /* not the shortest form: Autobahn fails the connection */
        out = result(HAND_OVER, NULL);
        goto done;
    }
    Py_ssize_t start = offset + head;
    if (length > FAST_PAYLOAD_LIMIT || (long long)length > max_payload) {
        out = result(HAND_OVER, NULL);
        goto done;
    }
    int has_mask = (second & MASKED) != 0;
    Py_ssize_t key_end = has_mask ? start + 4 : start;
    Py_ssize_t end = key_end + (Py_ssize_t)length;
    int is_binary = first == FIN_BINARY && binary;
    int simple = (first == FIN_TEXT || is_binary) && has_mask == (masked != 0);
    if (end > size) {
        out = result(length > WAIT_LIMIT || !simple ? HAND_OVER : INCOMPLETE, NULL);
        goto done;
    }
    if (!simple) {
        out = result(end, NULL);
        goto done;
    }
    PyObject *payload = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)length);
    if (payload == NULL)
        goto done;
    unsigned char *dst = (unsigned char *)PyBytes_AS_STRING(payload);
    if (has_mask)
        unmask_move(dst, buf + key_end, (size_t)length, buf + start, 0);
    else
        memcpy(dst, buf + key_end, (size_t)length);
    if (!is_binary) {
        PyObject *text = PyUnicode_DecodeUTF8((const char *)dst, (Py_ssize_t)length, "strict");
        if (text == NULL) {
            Py_DECREF(payload);
            if (!PyErr_ExceptionMatches(PyExc_UnicodeDecodeError))
                goto done;
            PyErr_Clear();
            out = result(end, NULL);
            goto done;
        }
        Py_DECREF(text);
    }
    out = result(end, payload);
done:
    PyBuffer_Release(&view);
    return out;
}

PyObject *codec_xor_move(PyObject *Py_UNUSED(module), PyObject *args)
{
    Py_buffer view, key;
    Py_ssize_t to, at, n;
    if (!PyArg_ParseTuple(args, "w*nnny*", &view, &to, &at, &n, &key))
        return NULL;
    PyObject *out = NULL;
    if (key.len != 4)
        PyErr_SetString(PyExc_ValueError, "the masking key must be 4 bytes");
    else if (to < 0 || at < 0 || n < 0 || to > at || at > view.len || n > view.len - at)
        PyErr_SetString(PyExc_ValueError, "xor_move needs 0 <= to <= at and at + n within the buffer");
    else {
        unmask_move((unsigned char *)view.buf + to, (const unsigned char *)view.buf + at, (size_t)n, key.buf, 0);
        out = Py_NewRef(Py_None);
    }
    PyBuffer_Release(&key);
    PyBuffer_Release(&view);
    return out;
}

PyObject *codec_build_frame(PyObject *Py_UNUSED(module), PyObject *args)
{
    Py_buffer payload;
    int first;
    PyObject *key_object;
    if (!PyArg_ParseTuple(args, "y*iO", &payload, &first, &key_object))
        return NULL;
    PyObject *out = NULL;
    const unsigned char *key = NULL;
    if (key_object != Py_None) {
        if (!PyBytes_Check(key_object) || PyBytes_GET_SIZE(key_object) != 4) {
            PyErr_SetString(PyExc_ValueError, "the masking key must be 4 bytes, or None");
            goto done;
        }
        key = (const unsigned char *)PyBytes_AS_STRING(key_object);
    }
    if (first < 0 || first > 255) {
        PyErr_SetString(PyExc_ValueError, "the first byte must be 0-255");
        goto done;
    }
    size_t length = (size_t)payload.len;
    size_t total = header_size(length) + (key ? 4 : 0) + length;
    out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)total);
    if (out == NULL)
        goto done;
    unsigned char *frame = (unsigned char *)PyBytes_AS_STRING(out);
    size_t header = put_header(frame, (unsigned char)first, key ? 0x80 : 0, length);
    if (key) {
        memcpy(frame + header, key, 4);
        unmask_move(frame + header + 4, payload.buf, length, key, 0);
    } else {
        memcpy(frame + header, payload.buf, length);
    }
done:
    PyBuffer_Release(&payload);
    return out;
}
