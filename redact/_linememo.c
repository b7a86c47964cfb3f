/* redact/_linememo.c: redact.lines.recall() and remember() in C, the same contracts
 * (redact/lines.py: the _py twins are the definition; the unit tests hold both equal,
 * memo and counters included).
 *
 * recall(text, memo, counts): each line of a run looked up in a Table's line memo by its
 * key (the hash of its bytes, as keyed_lines() computes it). Remembered lines are counted
 * (counts[rule id] += 1 per placeholder they hold); if every line is remembered, their
 * redactions joined are the answer, else (out, todo, fresh, keys) for Table._remember.
 * remember() then stores what was redacted of the others and joins the run.
 * A run with a NUL goes to the Python twin given to configure() (its lines end at NULs
 * too, which split_lines() cuts by regex): rare, and not worth a second cutter here.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

static PyObject *fallback; /* lines.recall_py */

static PyObject *configure(PyObject *self, PyObject *fn)
{
    (void)self;
    if (!PyCallable_Check(fn)) {
        PyErr_SetString(PyExc_TypeError, "configure: the fallback is not callable");
        return NULL;
    }
    Py_INCREF(fn);
    Py_XSETREF(fallback, fn);
    Py_RETURN_NONE;
}

/* hash(bytes) without making the bytes object: what bytes.__hash__ computes. */
static Py_hash_t hash_bytes(const char *p, Py_ssize_t n)
{
#if PY_VERSION_HEX >= 0x030E0000
    return Py_HashBuffer(p, n);
#else
    return _Py_HashBytes(p, n);
#endif
}

/* One line of the run: where it starts, its length without the LF, whether it had one. */
typedef struct {
    Py_ssize_t start, len;
    int lf;
} Line;

/* counts[rid] += 1 for each rule id of a remembered line. */
static int count_rules(PyObject *counts, PyObject *rids)
{
    if (!PyTuple_Check(rids)) {
        PyErr_SetString(PyExc_TypeError, "recall: a memo entry's rule ids are not a tuple");
        return -1;
    }
    for (Py_ssize_t j = 0; j < PyTuple_GET_SIZE(rids); j++) {
        PyObject *rid = PyTuple_GET_ITEM(rids, j);
        PyObject *had = PyDict_GetItemWithError(counts, rid);
        long n = 0;
        if (had == NULL && PyErr_Occurred())
            return -1;
        if (had != NULL && (n = PyLong_AsLong(had)) == -1 && PyErr_Occurred())
            return -1;
        PyObject *now = PyLong_FromLong(n + 1);
        if (now == NULL || PyDict_SetItem(counts, rid, now) < 0) {
            Py_XDECREF(now);
            return -1;
        }
        Py_DECREF(now);
    }
    return 0;
}

static PyObject *recall(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    if (nargs != 3 || !PyBytes_CheckExact(args[0]) || !PyDict_CheckExact(args[1])
        || !PyDict_CheckExact(args[2])) {
        PyErr_SetString(PyExc_TypeError, "recall(text: bytes, memo: dict, counts: dict)");
        return NULL;
    }
    PyObject *text = args[0], *memo = args[1], *counts = args[2];
    const char *p = PyBytes_AS_STRING(text);
    Py_ssize_t n = PyBytes_GET_SIZE(text);
    if (memchr(p, 0, (size_t)n) != NULL) {
        if (fallback == NULL) {
            PyErr_SetString(PyExc_RuntimeError, "recall: not configured");
            return NULL;
        }
        return PyObject_Vectorcall(fallback, args, 3, NULL);
    }

    Py_ssize_t nlines = 0;
    for (const char *q = p; q < p + n; nlines++) {
        const char *lf = memchr(q, '\n', (size_t)(p + n - q));
        q = lf ? lf + 1 : p + n;
    }
    Line *lines = PyMem_Malloc(sizeof(Line) * (size_t)(nlines ? nlines : 1));
    PyObject **got = PyMem_Calloc((size_t)(nlines ? nlines : 1), sizeof(PyObject *));
    PyObject **keys = PyMem_Calloc((size_t)(nlines ? nlines : 1), sizeof(PyObject *));
    PyObject *result = NULL, *out = NULL, *todo = NULL, *fresh = NULL, *fresh_keys = NULL;
    Py_ssize_t i, k = 0, missing = 0, total = 0;
    if (lines == NULL || got == NULL || keys == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    {
        const char *q = p;
        for (i = 0; i < nlines; i++) {
            const char *lf = memchr(q, '\n', (size_t)(p + n - q));
            lines[i].start = q - p;
            lines[i].len = (lf ? lf : p + n) - q;
            lines[i].lf = lf != NULL;
            q = lf ? lf + 1 : p + n;
        }
    }
    for (i = 0; i < nlines; i++) {
        Line *ln = &lines[i];
        Py_hash_t h;
        if (ln->lf) {
            h = hash_bytes(p + ln->start, ln->len);
        } else { /* a last line with no end: keyed by hash((line,)) */
            PyObject *last = PyBytes_FromStringAndSize(p + ln->start, ln->len);
            PyObject *one = last ? PyTuple_Pack(1, last) : NULL;
            Py_XDECREF(last);
            h = one ? PyObject_Hash(one) : -1;
            Py_XDECREF(one);
            if (h == -1)
                goto done;
        }
        if ((keys[i] = PyLong_FromSsize_t(h)) == NULL)
            goto done;
        PyObject *entry = PyDict_GetItemWithError(memo, keys[i]);
        if (entry == NULL) {
            if (PyErr_Occurred())
                goto done;
            missing++;
            continue;
        }
        if (!PyTuple_CheckExact(entry) || PyTuple_GET_SIZE(entry) != 2
            || !PyBytes_CheckExact(PyTuple_GET_ITEM(entry, 0))) {
            PyErr_SetString(PyExc_TypeError, "recall: a memo entry is not (bytes, rule ids)");
            goto done;
        }
        if (count_rules(counts, PyTuple_GET_ITEM(entry, 1)) < 0)
            goto done;
        got[i] = PyTuple_GET_ITEM(entry, 0);
        Py_INCREF(got[i]);
        total += PyBytes_GET_SIZE(got[i]);
    }

    if (!missing) { /* every line remembered: their redactions, joined */
        result = PyBytes_FromStringAndSize(NULL, total);
        if (result == NULL)
            goto done;
        char *w = PyBytes_AS_STRING(result);
        for (i = 0; i < nlines; i++) {
            memcpy(w, PyBytes_AS_STRING(got[i]), (size_t)PyBytes_GET_SIZE(got[i]));
            w += PyBytes_GET_SIZE(got[i]);
        }
        goto done;
    }
    out = PyList_New(nlines);
    todo = PyList_New(missing);
    fresh = PyList_New(missing);
    fresh_keys = PyList_New(missing);
    if (out == NULL || todo == NULL || fresh == NULL || fresh_keys == NULL)
        goto done;
    for (i = 0; i < nlines; i++) {
        if (got[i] != NULL) {
            PyList_SET_ITEM(out, i, got[i]);
            got[i] = NULL; /* the list holds it now */
            continue;
        }
        PyObject *idx = PyLong_FromSsize_t(i);
        PyObject *empty = PyBytes_FromStringAndSize(NULL, 0);
        PyObject *line = PyBytes_FromStringAndSize(p + lines[i].start,
                                                   lines[i].len + lines[i].lf);
        if (idx == NULL || empty == NULL || line == NULL) {
            Py_XDECREF(idx);
            Py_XDECREF(empty);
            Py_XDECREF(line);
            goto done;
        }
        PyList_SET_ITEM(out, i, empty);
        PyList_SET_ITEM(todo, k, idx);
        PyList_SET_ITEM(fresh, k, line);
        Py_INCREF(keys[i]);
        PyList_SET_ITEM(fresh_keys, k, keys[i]);
        k++;
    }
    result = PyTuple_Pack(4, out, todo, fresh, fresh_keys);
done:
    /* A list's slots not yet set are NULL, which list dealloc skips. */
    Py_XDECREF(out);
    Py_XDECREF(todo);
    Py_XDECREF(fresh);
    Py_XDECREF(fresh_keys);
    for (i = 0; got != NULL && keys != NULL && i < nlines; i++) {
        Py_XDECREF(got[i]);
        Py_XDECREF(keys[i]);
    }
    PyMem_Free(lines);
    PyMem_Free(got);
    PyMem_Free(keys);
    return result;
}

/* remember(memo, out, todo, keys, done, max_entries, max_bytes, held) -> (joined, held):
 * out[todo[j]] = done[j][0] and memo[keys[j]] = done[j], the memo cleared first whenever
 * it holds max_entries entries or max_bytes bytes of lines (held: what it holds now). */
static PyObject *remember(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *memo, *out, *todo, *keys, *done;
    Py_ssize_t max_entries, max_bytes, held, total = 0, i;
    if (!PyArg_ParseTuple(args, "O!O!O!O!O!nnn", &PyDict_Type, &memo, &PyList_Type, &out,
                          &PyList_Type, &todo, &PyList_Type, &keys, &PyList_Type, &done,
                          &max_entries, &max_bytes, &held))
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(todo);
    if (PyList_GET_SIZE(keys) != n || PyList_GET_SIZE(done) != n) {
        PyErr_SetString(PyExc_ValueError, "remember: todo, keys and done differ in length");
        return NULL;
    }
    for (Py_ssize_t j = 0; j < n; j++) {
        PyObject *line = PyList_GET_ITEM(done, j);
        Py_ssize_t at = PyLong_AsSsize_t(PyList_GET_ITEM(todo, j));
        if (at == -1 && PyErr_Occurred())
            return NULL;
        if (!PyTuple_CheckExact(line) || PyTuple_GET_SIZE(line) != 2
            || !PyBytes_CheckExact(PyTuple_GET_ITEM(line, 0))) {
            PyErr_SetString(PyExc_TypeError, "remember: a line is not (bytes, rule ids)");
            return NULL;
        }
        if (at < 0 || at >= PyList_GET_SIZE(out)) {
            PyErr_SetString(PyExc_IndexError, "remember: todo index out of range");
            return NULL;
        }
        if (PyDict_GET_SIZE(memo) >= max_entries || held >= max_bytes) {
            PyDict_Clear(memo);
            held = 0;
        }
        if (PyDict_SetItem(memo, PyList_GET_ITEM(keys, j), line) < 0)
            return NULL;
        PyObject *redacted = PyTuple_GET_ITEM(line, 0);
        held += PyBytes_GET_SIZE(redacted);
        Py_INCREF(redacted);
        PyList_SetItem(out, at, redacted); /* steals; drops the b"" placeholder */
    }
    for (i = 0; i < PyList_GET_SIZE(out); i++) {
        PyObject *part = PyList_GET_ITEM(out, i);
        if (!PyBytes_CheckExact(part)) {
            PyErr_SetString(PyExc_TypeError, "remember: out holds a non-bytes line");
            return NULL;
        }
        total += PyBytes_GET_SIZE(part);
    }
    PyObject *joined = PyBytes_FromStringAndSize(NULL, total);
    if (joined == NULL)
        return NULL;
    char *w = PyBytes_AS_STRING(joined);
    for (i = 0; i < PyList_GET_SIZE(out); i++) {
        PyObject *part = PyList_GET_ITEM(out, i);
        memcpy(w, PyBytes_AS_STRING(part), (size_t)PyBytes_GET_SIZE(part));
        w += PyBytes_GET_SIZE(part);
    }
    return Py_BuildValue("Nn", joined, held);
}

static PyMethodDef methods[] = {
    {"configure", configure, METH_O, "configure(fallback): the Python twin, for runs with a NUL"},
    {"recall", (PyCFunction)(void (*)(void))recall, METH_FASTCALL,
     "recall(text, memo, counts) -> bytes | (out, todo, fresh, keys)"},
    {"remember", remember, METH_VARARGS,
     "remember(memo, out, todo, keys, done, max_entries, max_bytes, held) -> (joined, held)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "redact._linememo",
    "The line memo in C (see redact/lines.py).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__linememo(void)
{
    return PyModule_Create(&module);
}
