/* redact/_droptail.c: redact/segment.drop_tail_py in C, the same contract (the unit tests
 * hold both twins equal on random input).
 *
 * While a Segmenter drops the rest of a line, every chunk without a line end only moves
 * the tail it keeps. A write loop that never ends a line takes this step per write, and
 * in Python its two scans and two buffer edits were a fifth of the pipeline thread.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

/* drop_tail(buf: bytearray, data: bytes, keep: int) -> bool
 * False (buf untouched) if data holds a LF or NUL; else buf becomes the last `keep` bytes
 * of buf + data (all of it when shorter) and True. */
static PyObject *drop_tail(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    if (nargs != 3 || !PyByteArray_Check(args[0]) || !PyBytes_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "drop_tail(buf: bytearray, data: bytes, keep: int)");
        return NULL;
    }
    PyObject *buf = args[0];
    Py_ssize_t keep = PyLong_AsSsize_t(args[2]);
    if (keep == -1 && PyErr_Occurred())
        return NULL;
    if (keep < 0) {
        PyErr_SetString(PyExc_ValueError, "drop_tail: keep < 0");
        return NULL;
    }
    const char *d = PyBytes_AS_STRING(args[1]);
    Py_ssize_t n = PyBytes_GET_SIZE(args[1]);
    if (memchr(d, '\n', (size_t)n) || memchr(d, '\0', (size_t)n))
        Py_RETURN_FALSE;
    if (((PyByteArrayObject *)buf)->ob_exports > 0) {  /* as buf += data would */
        PyErr_SetString(PyExc_BufferError,
                        "Existing exports of data: object cannot be re-sized");
        return NULL;
    }
    Py_ssize_t held = PyByteArray_GET_SIZE(buf);
    if (n >= keep) {  /* the tail is all data's */
        if (PyByteArray_Resize(buf, keep) < 0)
            return NULL;
        memcpy(PyByteArray_AS_STRING(buf), d + n - keep, (size_t)keep);
        Py_RETURN_TRUE;
    }
    Py_ssize_t old = held < keep - n ? held : keep - n;  /* buf's last bytes that stay */
    char *b;
    if (old + n > held) {  /* grows: resize first (it keeps the front), then shift */
        if (PyByteArray_Resize(buf, old + n) < 0)
            return NULL;
        b = PyByteArray_AS_STRING(buf);
        memmove(b, b + held - old, (size_t)old);
    } else {  /* shrinks: shift first, so the resize keeps what stays */
        b = PyByteArray_AS_STRING(buf);
        memmove(b, b + held - old, (size_t)old);
        if (PyByteArray_Resize(buf, old + n) < 0)
            return NULL;
        b = PyByteArray_AS_STRING(buf);
    }
    memcpy(b + old, d, (size_t)n);
    Py_RETURN_TRUE;
}

static PyMethodDef methods[] = {
    {"drop_tail", (PyCFunction)(void (*)(void))drop_tail, METH_FASTCALL,
     "drop_tail(buf, data, keep) -> bool: the Segmenter's dropped-line step"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_droptail", "C twin of redact/segment.drop_tail_py", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__droptail(void)
{
    return PyModule_Create(&module);
}
