/* collector/capture/_printable.c: events.printable() in C, the same contract (see
 * collector/capture/events.py: printable_reference is the definition, and the unit tests
 * hold this twin, the Python twin and the reference equal on random bytes).
 *
 * Escapes are ASCII and only replace ASCII bytes, which never occur inside a UTF-8
 * multi-byte sequence: the bytes are escaped first, then decoded as UTF-8 once. Bytes that
 * are not UTF-8 (shown as \xNN through surrogateescape), and binary (more than one control
 * byte in 16), go to the reference given to configure().
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

static char esc[128][8];    /* the escape of each ASCII byte, "" where it is shown as is */
static unsigned char esc_len[128];
static char other[128];     /* control bytes other than tab, LF and CR (the binary count) */
static PyObject *reference; /* events.printable_reference */

/* configure(reference, escapes: {byte: str} for ASCII bytes, other_controls: bytes): the
 * tables are events.py's (_ESCAPES, _OTHER_CONTROLS), so the escapes have one definition. */
static PyObject *configure(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *ref, *escapes, *key, *value;
    const char *others;
    Py_ssize_t n_others, pos = 0;
    if (!PyArg_ParseTuple(args, "OO!y#", &ref, &PyDict_Type, &escapes, &others, &n_others))
        return NULL;
    if (!PyCallable_Check(ref)) {
        PyErr_SetString(PyExc_TypeError, "configure: reference is not callable");
        return NULL;
    }
    memset(esc_len, 0, sizeof esc_len);
    memset(other, 0, sizeof other);
    while (PyDict_Next(escapes, &pos, &key, &value)) {
        long c = PyLong_AsLong(key);
        Py_ssize_t n;
        const char *text = PyUnicode_Check(value) ? PyUnicode_AsUTF8AndSize(value, &n) : NULL;
        if (c == -1 && PyErr_Occurred())
            return NULL;
        if (c < 0 || c >= 128)
            continue; /* undecodable bytes: the reference shows them */
        if (text == NULL || n < 1 || n >= (Py_ssize_t)sizeof esc[0]) {
            PyErr_SetString(PyExc_ValueError, "configure: bad escape");
            return NULL;
        }
        memcpy(esc[c], text, (size_t)n);
        esc_len[c] = (unsigned char)n;
    }
    for (Py_ssize_t i = 0; i < n_others; i++) {
        unsigned char c = (unsigned char)others[i];
        if (c >= 128 || !esc_len[c]) {
            PyErr_SetString(PyExc_ValueError, "configure: a control byte without an escape");
            return NULL;
        }
        other[c] = 1;
    }
    Py_INCREF(ref);
    Py_XSETREF(reference, ref);
    Py_RETURN_NONE;
}

static PyObject *not_utf8(PyObject *data)
{
    if (!PyErr_ExceptionMatches(PyExc_UnicodeDecodeError))
        return NULL;
    PyErr_Clear();
    return PyObject_CallOneArg(reference, data);
}

/* printable(data: bytes) -> str */
static PyObject *printable(PyObject *self, PyObject *data)
{
    (void)self;
    if (reference == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "_printable.configure() was not called");
        return NULL;
    }
    if (!PyBytes_Check(data)) {
        PyErr_SetString(PyExc_TypeError, "printable(data: bytes)");
        return NULL;
    }
    const unsigned char *p = (const unsigned char *)PyBytes_AS_STRING(data);
    Py_ssize_t n = PyBytes_GET_SIZE(data), extra = 0, others = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned char c = p[i];
        if (c < 128 && esc_len[c]) {
            extra += esc_len[c] - 1;
            others += other[c];
        }
    }
    if (others > n >> 4) /* binary, most likely: the reference's translate */
        return PyObject_CallOneArg(reference, data);
    if (extra == 0) {
        PyObject *text = PyUnicode_DecodeUTF8((const char *)p, n, "strict");
        return text != NULL ? text : not_utf8(data);
    }
    char *buf = PyMem_Malloc((size_t)(n + extra));
    if (buf == NULL)
        return PyErr_NoMemory();
    char *w = buf;
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned char c = p[i];
        if (c < 128 && esc_len[c]) {
            memcpy(w, esc[c], esc_len[c]);
            w += esc_len[c];
        } else {
            *w++ = (char)c;
        }
    }
    PyObject *text = PyUnicode_DecodeUTF8(buf, w - buf, "strict");
    PyMem_Free(buf);
    return text != NULL ? text : not_utf8(data);
}

static PyMethodDef methods[] = {
    {"configure", configure, METH_VARARGS,
     "Give the reference (what is not UTF-8) and the escape tables."},
    {"printable", printable, METH_O, "printable(data: bytes) -> str, strace-style escapes"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "collector.capture._printable",
    "Payload bytes -> display text (collector/capture/events.py printable), in C.", -1,
    methods,
};

PyMODINIT_FUNC PyInit__printable(void) { return PyModule_Create(&module); }
