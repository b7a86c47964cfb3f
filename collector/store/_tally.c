/* collector/store/_tally.c: the per-event work of BlockBuilder._account (collector/store/
 * blocks.py) in C: one pass over a batch's events that counts, per process row, per
 * (row, syscall) and per (row, syscall, latency bucket), what the Python column passes
 * count. BlockBuilder merges the result; tests/unit/store/test_blocks.py holds both paths
 * equal to a plain per-event loop. Anything unusual (a timestamp or latency that is not a
 * finite float, a ret past 64 bits) returns None: the batch then takes the Python path.
 *
 * tally(events, idxs, kind_bits, other_kind) ->
 *     ({idx: (n, ts_min, ts_max, kinds, payload)},
 *      {(idx, syscall): (count, lat_sum, bytes)},
 *      {(idx, syscall, bucket): count},
 *      [positions of the events with an errno]) | None
 * bucket = floor(4 * log2(max(latency_us, 0.001))), as blocks.bucket().
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define SUB 4.0
#define ROWS_MAX 65536 /* row indexes are stored as uint16 */

typedef struct { Py_ssize_t n, payload; double lo, hi; long kinds; } Row;
typedef struct { PyObject *key; Py_ssize_t count; double lat_sum; long long bytes; } Key;
typedef struct { PyObject *key; Py_ssize_t count; } Lat;

static PyObject *k_ts, *k_kind, *k_payload, *k_syscall, *k_latency, *k_errno, *k_direction,
    *k_ret;

/* The slot of `key` in `index` (a dict key -> int), appending a new one to the array. */
static Py_ssize_t slot_of(PyObject *index, PyObject *key, void **arr, Py_ssize_t *len,
                          Py_ssize_t *cap, size_t size)
{
    PyObject *at = PyDict_GetItemWithError(index, key);
    if (at != NULL)
        return PyLong_AsSsize_t(at);
    if (PyErr_Occurred())
        return -1;
    if (*len == *cap) {
        Py_ssize_t ncap = *cap ? *cap * 2 : 16;
        void *grown = realloc(*arr, (size_t)ncap * size);
        if (grown == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        *arr = grown;
        *cap = ncap;
    }
    PyObject *pos = PyLong_FromSsize_t(*len);
    if (pos == NULL || PyDict_SetItem(index, key, pos) < 0) {
        Py_XDECREF(pos);
        return -1;
    }
    Py_DECREF(pos);
    memset((char *)*arr + (size_t)*len * size, 0, size);
    Py_INCREF(key);
    *(PyObject **)((char *)*arr + (size_t)*len * size) = key; /* key is the first member */
    return (*len)++;
}

/* The slot of `key` (a new reference, released here; NULL: an error is set) in `index`
 * (a dict key -> int), appending a new one to the array. -1 on error. */
static Py_ssize_t slot(PyObject *index, PyObject *key, void **arr, Py_ssize_t *len,
                       Py_ssize_t *cap, size_t size)
{
    if (key == NULL)
        return -1;
    Py_ssize_t got = slot_of(index, key, arr, len, cap, size);
    Py_DECREF(key);
    return got;
}

static PyObject *tally(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *evs, *idxs, *kind_bits;
    long other_kind;
    if (!PyArg_ParseTuple(args, "O!O!O!l", &PyList_Type, &evs, &PyList_Type, &idxs,
                          &PyDict_Type, &kind_bits, &other_kind))
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(evs);
    if (PyList_GET_SIZE(idxs) != n) {
        PyErr_SetString(PyExc_ValueError, "events and idxs differ in length");
        return NULL;
    }
    Row *rows = NULL;
    Key *keys = NULL;
    Lat *lats = NULL;
    Py_ssize_t nkeys = 0, capkeys = 0, nlats = 0, caplats = 0, last_key = -1, last_lat = -1;
    PyObject *key_index = PyDict_New(), *lat_index = PyDict_New(), *errs = PyList_New(0);
    PyObject *result = NULL, *last_sc = NULL;
    long last_i = -1, last_b = 0;
    char *seen = NULL;
    long max_i = -1;
    if (key_index == NULL || lat_index == NULL || errs == NULL)
        goto done;
    for (Py_ssize_t j = 0; j < n; j++) { /* the rows this batch touches: 0..max_i */
        long i = PyLong_AsLong(PyList_GET_ITEM(idxs, j));
        if (i == -1 && PyErr_Occurred())
            goto done;
        if (i < 0 || i >= ROWS_MAX)
            goto fallback;
        if (i > max_i)
            max_i = i;
    }
    seen = calloc((size_t)max_i + 1, 1);
    rows = calloc((size_t)max_i + 1, sizeof(Row));
    if (seen == NULL || rows == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t j = 0; j < n; j++) {
        PyObject *ev = PyList_GET_ITEM(evs, j);
        long i = PyLong_AsLong(PyList_GET_ITEM(idxs, j));
        if (!PyDict_Check(ev))
            goto fallback;
        PyObject *ts_o = PyDict_GetItemWithError(ev, k_ts);
        PyObject *kind = PyDict_GetItemWithError(ev, k_kind);
        if (ts_o == NULL || kind == NULL || !PyFloat_CheckExact(ts_o))
            goto fallback_or_error;
        double ts = PyFloat_AS_DOUBLE(ts_o);
        if (isnan(ts))
            goto fallback;
        Row *r = &rows[i];
        if (!seen[i]) {
            seen[i] = 1;
            r->lo = r->hi = ts;
        } else {
            if (ts < r->lo)
                r->lo = ts;
            if (ts > r->hi)
                r->hi = ts;
        }
        r->n++;
        PyObject *bits = PyDict_GetItemWithError(kind_bits, kind);
        if (bits == NULL && PyErr_Occurred())
            goto done;
        r->kinds |= bits != NULL ? PyLong_AsLong(bits) : other_kind;
        int has = PyDict_Contains(ev, k_payload);
        if (has < 0)
            goto done;
        r->payload += has;
        PyObject *sc = PyDict_GetItemWithError(ev, k_syscall);
        if (sc == NULL) {
            if (PyErr_Occurred())
                goto done;
            continue; /* exec, fork, exit, data, observers' records */
        }
        PyObject *lat_o = PyDict_GetItemWithError(ev, k_latency);
        double ms = 0.0;
        if (lat_o != NULL) {
            if (!PyFloat_CheckExact(lat_o))
                goto fallback;
            ms = PyFloat_AS_DOUBLE(lat_o);
        } else if (PyErr_Occurred()) {
            goto done;
        }
        if (!isfinite(ms))
            goto fallback;
        /* (row, syscall): the same as the previous event's, most of the time */
        if (last_key < 0 || i != last_i || sc != last_sc) {
            last_key = slot(key_index, Py_BuildValue("(lO)", i, sc), (void **)&keys, &nkeys,
                            &capkeys, sizeof(Key));
            if (last_key < 0)
                goto done;
            last_i = i;
            last_sc = sc;
            last_lat = -1;
        }
        Key *kk = &keys[last_key];
        kk->count++;
        kk->lat_sum += ms;
        long b = (long)floor(SUB * log2(ms > 0.001 ? ms : 0.001));
        if (last_lat < 0 || b != last_b) {
            last_lat = slot(lat_index, Py_BuildValue("(lOl)", i, sc, b), (void **)&lats, &nlats,
                            &caplats, sizeof(Lat));
            if (last_lat < 0)
                goto done;
            last_b = b;
        }
        lats[last_lat].count++;
        PyObject *err = PyDict_GetItemWithError(ev, k_errno);
        if (err == NULL && PyErr_Occurred())
            goto done;
        if (err != NULL && err != Py_None) {
            PyObject *pos = PyLong_FromSsize_t(j);
            if (pos == NULL || PyList_Append(errs, pos) < 0) {
                Py_XDECREF(pos);
                goto done;
            }
            Py_DECREF(pos);
            continue;
        }
        int io = PyDict_Contains(ev, k_direction);
        if (io < 0)
            goto done;
        if (io) {
            PyObject *ret = PyDict_GetItemWithError(ev, k_ret);
            if (ret == NULL) {
                if (PyErr_Occurred())
                    goto done;
                continue;
            }
            if (!PyLong_CheckExact(ret))
                goto fallback;
            int overflow;
            long long v = PyLong_AsLongLongAndOverflow(ret, &overflow);
            if (overflow || (v == -1 && PyErr_Occurred()))
                goto fallback;
            if (v > 0 && __builtin_add_overflow(kk->bytes, v, &kk->bytes))
                goto fallback;
        }
    }
    {
        PyObject *rows_out = PyDict_New(), *keys_out = PyDict_New(), *lat_out = PyDict_New();
        if (rows_out == NULL || keys_out == NULL || lat_out == NULL)
            goto build_failed;
        for (long i = 0; i <= max_i; i++) {
            if (!seen[i])
                continue;
            Row *r = &rows[i];
            PyObject *k = PyLong_FromLong(i);
            PyObject *v = Py_BuildValue("(nddln)", r->n, r->lo, r->hi, r->kinds, r->payload);
            int rc = (k && v) ? PyDict_SetItem(rows_out, k, v) : -1;
            Py_XDECREF(k);
            Py_XDECREF(v);
            if (rc < 0)
                goto build_failed;
        }
        for (Py_ssize_t s = 0; s < nkeys; s++) {
            PyObject *v = Py_BuildValue("(ndL)", keys[s].count, keys[s].lat_sum, keys[s].bytes);
            int rc = v ? PyDict_SetItem(keys_out, keys[s].key, v) : -1;
            Py_XDECREF(v);
            if (rc < 0)
                goto build_failed;
        }
        for (Py_ssize_t s = 0; s < nlats; s++) {
            PyObject *v = PyLong_FromSsize_t(lats[s].count);
            int rc = v ? PyDict_SetItem(lat_out, lats[s].key, v) : -1;
            Py_XDECREF(v);
            if (rc < 0)
                goto build_failed;
        }
        result = Py_BuildValue("(NNNO)", rows_out, keys_out, lat_out, errs);
        goto done;
    build_failed:
        Py_XDECREF(rows_out);
        Py_XDECREF(keys_out);
        Py_XDECREF(lat_out);
        goto done;
    }
fallback_or_error:
    if (PyErr_Occurred())
        goto done;
fallback:
    result = Py_NewRef(Py_None);
done:
    for (Py_ssize_t s = 0; s < nkeys; s++)
        Py_DECREF(keys[s].key);
    for (Py_ssize_t s = 0; s < nlats; s++)
        Py_DECREF(lats[s].key);
    free(keys);
    free(lats);
    free(rows);
    free(seen);
    Py_XDECREF(key_index);
    Py_XDECREF(lat_index);
    Py_XDECREF(errs);
    return result;
}

static PyMethodDef methods[] = {
    {"tally", tally, METH_VARARGS,
     "tally(events, idxs, kind_bits, other_kind) -> (rows, keys, lat, errs) or None"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "collector.store._tally",
    "BlockBuilder's per-event aggregates in one C pass (collector/store/blocks.py).", -1,
    methods,
};

PyMODINIT_FUNC PyInit__tally(void)
{
    k_ts = PyUnicode_InternFromString("ts");
    k_kind = PyUnicode_InternFromString("kind");
    k_payload = PyUnicode_InternFromString("payload");
    k_syscall = PyUnicode_InternFromString("syscall");
    k_latency = PyUnicode_InternFromString("latency_us");
    k_errno = PyUnicode_InternFromString("errno");
    k_direction = PyUnicode_InternFromString("direction");
    k_ret = PyUnicode_InternFromString("ret");
    if (PyErr_Occurred())
        return NULL;
    return PyModule_Create(&module);
}
