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

static char esc[128][5];   /* the escape of each ASCII byte, "" where it is shown as is */
static unsigned char esc_len[128];
static PyObject *reference; /* events.printable_reference */

static void set_escape(int c, const char *s)
{
    size_t n = strlen(s);
    memcpy(esc[c], s, n);
    esc_len[c] = (unsigned char)n;
}

/* configure(reference) */
static PyObject *configure(PyObject *self, PyObject *arg)
{
    (void)self;
    if (!PyCallable_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "configure(reference: callable)");
        return NULL;
    }
    for (int c = 0; c < 128; c++) {
        char hex[5];
        if (c < 0x20 || c == 0x7F) {
            snprintf(hex, sizeof hex, "\\x%02x", c);
            set_escape(c, hex);
        } else {
            esc_len[c] = 0;
        }
    }
    set_escape('\\', "\\\\");
    set_escape('\n', "\\n");
    set_escape('\r', "\\r");
    set_escape('\t', "\\t");
    Py_INCREF(arg);
    Py_XSETREF(reference, arg);
    Py_RETURN_NONE;
}

static int other_control(unsigned char c)
{
    return (c < 0x20 && c != '\t' && c != '\n' && c != '\r') || c == 0x7F;
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
            others += other_control(c);
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
    {"configure", configure, METH_O, "Give the reference for what is not UTF-8."},
    {"printable", printable, METH_O, "printable(data: bytes) -> str, strace-style escapes"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "collector.capture._printable",
    "Payload bytes -> display text (collector/capture/events.py printable), in C.", -1,
    methods,
};

PyMODINIT_FUNC PyInit__printable(void) { return PyModule_Create(&module); }
