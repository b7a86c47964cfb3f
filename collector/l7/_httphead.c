/* collector/l7/_httphead.c: http.headers_py() in C, the same contract (collector/l7/http.py:
 * headers_py, one regex scan, is the definition; the unit tests hold the twins equal on
 * random heads).
 *
 * headers(buf, start, end) -> (framing, kept): every match of
 *   \r\n(NAME)[ \t]*:[ \t]*([^\r\n]*)   (NAME one of configure()'s names, ASCII case folded)
 * in buf[start:end], left to right, as re.finditer finds them: a framing name maps to its
 * value stripped and lowercased (a later one wins), a kept name adds (its label, the value
 * stripped, decoded as UTF-8 with backslash escapes) to kept, in order. Python's `re` folds
 * case one character at a time over the alternation at every line start: ~3 µs per
 * browser-sized request head, a third of the HTTP parser's time here.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

#define MAX_NAMES 16

static PyObject *names[MAX_NAMES];  /* lowercase bytes, in the regex's alternation order */
static PyObject *labels[MAX_NAMES]; /* str for a kept name, NULL for a framing one */
static int n_names;

/* configure(names: tuple[bytes, ...], kept: dict[bytes, str]): the names of the Python
 * twin's regex (lowercase, in its order) and the labels of the kept ones (http.KEPT). */
static PyObject *configure(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *seq, *kept;
    if (!PyArg_ParseTuple(args, "O!O!", &PyTuple_Type, &seq, &PyDict_Type, &kept))
        return NULL;
    Py_ssize_t n = PyTuple_GET_SIZE(seq);
    if (n > MAX_NAMES) {
        PyErr_SetString(PyExc_ValueError, "configure: too many names");
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *name = PyTuple_GET_ITEM(seq, i);
        if (!PyBytes_Check(name) || PyBytes_GET_SIZE(name) == 0) {
            PyErr_SetString(PyExc_TypeError, "configure: a name is not non-empty bytes");
            return NULL;
        }
        const char *s = PyBytes_AS_STRING(name);
        for (Py_ssize_t j = 0; j < PyBytes_GET_SIZE(name); j++) {
            if (Py_TOLOWER(s[j]) != s[j] || s[j] == '\r' || s[j] == '\n') {
                PyErr_SetString(PyExc_ValueError, "configure: names are lowercase, one line");
                return NULL;
            }
        }
        PyObject *label = PyDict_GetItemWithError(kept, name);
        if (label == NULL && PyErr_Occurred())
            return NULL;
        if (label != NULL && !PyUnicode_Check(label)) {
            PyErr_SetString(PyExc_TypeError, "configure: a label is not str");
            return NULL;
        }
        Py_INCREF(name);
        Py_XINCREF(label);
        Py_XSETREF(names[i], name);
        Py_XSETREF(labels[i], label);
    }
    for (int i = (int)n; i < n_names; i++) {
        Py_CLEAR(names[i]);
        Py_CLEAR(labels[i]);
    }
    n_names = (int)n;
    Py_RETURN_NONE;
}

static int is_space(unsigned char c) /* bytes.rstrip()'s whitespace */
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\x0b' || c == '\x0c';
}

/* Which name starts at p (at most `left` bytes), followed by [ \t]*: ; -1 if none. *after is
 * then where the colon's [ \t]* ends. */
static int name_at(const unsigned char *p, Py_ssize_t left, Py_ssize_t *after)
{
    for (int k = 0; k < n_names; k++) {
        Py_ssize_t len = PyBytes_GET_SIZE(names[k]);
        const unsigned char *s = (const unsigned char *)PyBytes_AS_STRING(names[k]);
        if (len > left)
            continue;
        Py_ssize_t j = 0;
        while (j < len && Py_TOLOWER(p[j]) == s[j])
            j++;
        if (j < len)
            continue;
        while (j < left && (p[j] == ' ' || p[j] == '\t'))
            j++;
        if (j >= left || p[j] != ':')
            continue; /* as the regex backtracks: the next name in its alternation */
        j++;
        while (j < left && (p[j] == ' ' || p[j] == '\t'))
            j++;
        *after = j;
        return k;
    }
    return -1;
}

static PyObject *headers(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "headers(buf, start, end)");
        return NULL;
    }
    if (n_names == 0) {
        PyErr_SetString(PyExc_RuntimeError, "_httphead.configure() was not called");
        return NULL;
    }
    Py_ssize_t start = PyNumber_AsSsize_t(args[1], PyExc_OverflowError);
    if (start == -1 && PyErr_Occurred())
        return NULL;
    Py_ssize_t end = PyNumber_AsSsize_t(args[2], PyExc_OverflowError);
    if (end == -1 && PyErr_Occurred())
        return NULL;
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0)
        return NULL;
    /* re's pos/endpos: negative means 0, past the end means the end */
    if (start < 0)
        start = 0;
    if (end > view.len)
        end = view.len;
    PyObject *framing = PyDict_New(), *kept = PyList_New(0), *out = NULL;
    if (framing == NULL || kept == NULL)
        goto done;
    const unsigned char *b = view.buf;
    Py_ssize_t i = start;
    while (i + 1 < end) {
        const unsigned char *cr = memchr(b + i, '\r', (size_t)(end - 1 - i));
        if (cr == NULL)
            break;
        Py_ssize_t p = cr - b;
        if (b[p + 1] != '\n') {
            i = p + 1;
            continue;
        }
        Py_ssize_t after = 0;
        int k = name_at(b + p + 2, end - p - 2, &after);
        if (k < 0) {
            i = p + 1;
            continue;
        }
        Py_ssize_t v0 = p + 2 + after, v1 = v0;
        while (v1 < end && b[v1] != '\r' && b[v1] != '\n')
            v1++;
        i = v1; /* the next search starts where this match ended */
        Py_ssize_t v = v1;
        while (v > v0 && is_space(b[v - 1]))
            v--;
        if (labels[k] != NULL) {
            PyObject *text = PyUnicode_DecodeUTF8((const char *)b + v0, v - v0,
                                                  "backslashreplace");
            if (text == NULL)
                goto done;
            PyObject *pair = PyTuple_Pack(2, labels[k], text);
            Py_DECREF(text);
            if (pair == NULL || PyList_Append(kept, pair) < 0) {
                Py_XDECREF(pair);
                goto done;
            }
            Py_DECREF(pair);
        } else {
            PyObject *value = PyBytes_FromStringAndSize(NULL, v - v0);
            if (value == NULL)
                goto done;
            char *w = PyBytes_AS_STRING(value);
            for (Py_ssize_t j = v0; j < v; j++)
                *w++ = (char)Py_TOLOWER(b[j]);
            int rc = PyDict_SetItem(framing, names[k], value);
            Py_DECREF(value);
            if (rc < 0)
                goto done;
        }
    }
    out = PyTuple_Pack(2, framing, kept);
done:
    PyBuffer_Release(&view);
    Py_XDECREF(framing);
    Py_XDECREF(kept);
    return out;
}

static PyMethodDef methods[] = {
    {"configure", configure, METH_VARARGS, "Give the header names and the kept ones' labels."},
    {"headers", (PyCFunction)(void (*)(void))headers, METH_FASTCALL,
     "headers(buf, start, end) -> (framing: {name: value}, kept: [(label, text)])"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "collector.l7._httphead",
    "The framing and kept headers of an HTTP head (collector/l7/http.py headers), in C.", -1,
    methods,
};

PyMODINIT_FUNC PyInit__httphead(void) { return PyModule_Create(&module); }
