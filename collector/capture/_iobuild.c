/* collector/capture/_iobuild.c: iobuild.io_event() in C, the same contract (see
 * collector/capture/iobuild.py, the definition; the unit tests hold the two equal, key
 * order included). It reads the record at the offsets configure() is given from
 * probes/layout.py, so the layout has one definition. Values a double cannot hold
 * exactly (a timestamp or a latency past 2**53) go to the Python twin.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdio.h>

enum { F_OP, F_VERSION, F_COOKIE, F_KTIME, F_TGID, F_TID, F_NR, F_FLAGS, F_FD, F_RET,
       F_LATENCY, F_ARG, F_DATA_LEN, NFIELDS };
static const char *const field_names[NFIELDS] = {
    "op", "version", "cookie", "ktime", "tgid", "tid", "nr", "flags", "fd", "ret",
    "latency_ns", "arg", "data_len"};
#define NR_MAX 65536 /* nr is a u16 */
#define EXACT ((uint64_t)1 << 53)

static Py_ssize_t off[NFIELDS];
static int width[NFIELDS];
static Py_ssize_t hdr_size;
static uint64_t version, op_syscall, op_tls, f_out, f_cipher;
static PyObject *io_name[NR_MAX], *io_kind[NR_MAX]; /* strong refs; NULL: not I/O */
static char io_sized[NR_MAX], io_is_syscall[NR_MAX], io_is_tls[NR_MAX];
static PyObject *errnames, *fallback;
static PyObject *k_ts, *k_kind, *k_pid, *k_tid, *k_target, *k_syscall, *k_ret, *k_errno,
    *k_latency, *k_conn, *k_fd, *k_size, *k_direction, *k_ciphertext, *s_out, *s_in;
static int configured;

static uint64_t rd(const unsigned char *p, int f)
{
    uint64_t v = 0;
    for (int i = width[f] - 1; i >= 0; i--)
        v = (v << 8) | p[off[f] + i];
    return v;
}

static int64_t rd_signed(const unsigned char *p, int f)
{
    uint64_t v = rd(p, f);
    int bits = 8 * width[f];
    if (bits < 64 && (v >> (bits - 1)) & 1)
        v |= ~(uint64_t)0 << bits;
    return (int64_t)v;
}

static int set_new(PyObject *d, PyObject *k, PyObject *v) /* steals v */
{
    if (v == NULL)
        return -1;
    int rc = PyDict_SetItem(d, k, v);
    Py_DECREF(v);
    return rc;
}

#define EVENT_KEYS 16
static PyObject *new_event(void)
{
#if PY_VERSION_HEX < 0x030E0000 /* a CPython-private call: kept where it is known to exist */
    return _PyDict_NewPresized(EVENT_KEYS);
#else
    return PyDict_New();
#endif
}

/* The last process's pid as an int object: a batch's records come mostly from a few
 * processes, so pid, tid (of a single-threaded process) and the returned tgid share it
 * instead of allocating three ints per event. */
static uint64_t last_tgid = UINT64_MAX;
static PyObject *last_tgid_obj;

static PyObject *tgid_int(uint64_t tgid) /* new reference */
{
    if (tgid != last_tgid || last_tgid_obj == NULL) {
        PyObject *obj = PyLong_FromUnsignedLongLong(tgid);
        if (obj == NULL)
            return NULL;
        Py_XSETREF(last_tgid_obj, obj);
        last_tgid = tgid;
    }
    Py_INCREF(last_tgid_obj);
    return last_tgid_obj;
}

static PyObject *key(const char *s)
{
    PyObject *k = PyUnicode_InternFromString(s);
    return k;
}

/* configure(fields: {name: (offset, size)}, hdr_size, version, op_syscall, op_tls,
 *           f_data_out, f_ciphertext, io: {nr: (name, kind, sized)}, errnames, fallback) */
static PyObject *configure(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *fields, *io;
    unsigned long long ver, ops, opt, fo, fc;
    Py_ssize_t hs;
    if (!PyArg_ParseTuple(args, "O!nKKKKKO!O!O", &PyDict_Type, &fields, &hs, &ver, &ops, &opt,
                          &fo, &fc, &PyDict_Type, &io, &PyDict_Type, &errnames, &fallback))
        return NULL;
    for (int f = 0; f < NFIELDS; f++) {
        PyObject *spec = PyDict_GetItemString(fields, field_names[f]);
        Py_ssize_t o, w;
        if (spec == NULL || !PyArg_ParseTuple(spec, "nn", &o, &w) || o < 0 || o + w > hs
            || (w != 1 && w != 2 && w != 4 && w != 8)) {
            PyErr_Format(PyExc_ValueError, "bad layout for field %s", field_names[f]);
            return NULL;
        }
        off[f] = o;
        width[f] = (int)w;
    }
    if (width[F_NR] > 2) {
        PyErr_SetString(PyExc_ValueError, "nr wider than 16 bits");
        return NULL;
    }
    hdr_size = hs;
    version = ver;
    op_syscall = ops;
    op_tls = opt;
    f_out = fo;
    f_cipher = fc;
    PyObject *nr_obj, *entry;
    Py_ssize_t pos = 0;
    while (PyDict_Next(io, &pos, &nr_obj, &entry)) {
        long nr = PyLong_AsLong(nr_obj);
        PyObject *name, *kind;
        int sized;
        if ((nr == -1 && PyErr_Occurred()) || nr < 0 || nr >= NR_MAX
            || !PyArg_ParseTuple(entry, "UUp", &name, &kind, &sized)) {
            PyErr_SetString(PyExc_ValueError, "bad I/O syscall table entry");
            return NULL;
        }
        Py_INCREF(name);
        Py_XSETREF(io_name[nr], name);
        Py_INCREF(kind);
        Py_XSETREF(io_kind[nr], kind);
        io_sized[nr] = (char)sized;
        io_is_syscall[nr] = PyUnicode_CompareWithASCIIString(kind, "syscall") == 0;
        io_is_tls[nr] = PyUnicode_CompareWithASCIIString(kind, "tls") == 0;
    }
    Py_INCREF(errnames);
    Py_INCREF(fallback);
    k_ts = key("ts"); k_kind = key("kind"); k_pid = key("pid"); k_tid = key("tid");
    k_target = key("target"); k_syscall = key("syscall"); k_ret = key("ret");
    k_errno = key("errno"); k_latency = key("latency_us"); k_conn = key("conn");
    k_fd = key("fd"); k_size = key("size"); k_direction = key("direction");
    k_ciphertext = key("ciphertext"); s_out = key("out"); s_in = key("in");
    if (PyErr_Occurred())
        return NULL;
    configured = 1;
    Py_RETURN_NONE;
}

/* build(raw: bytes, offset_us: int) -> (event, tgid, cookie, where, direction, flags,
 *                                       data_len, ret) | None */
static PyObject *build(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    if (!configured) {
        PyErr_SetString(PyExc_RuntimeError, "_iobuild.configure() was not called");
        return NULL;
    }
    if (nargs != 2 || !PyBytes_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "build(raw: bytes, offset_us: int)");
        return NULL;
    }
    const unsigned char *p = (const unsigned char *)PyBytes_AS_STRING(args[0]);
    Py_ssize_t len = PyBytes_GET_SIZE(args[0]);
    long long offset_us = PyLong_AsLongLong(args[1]);
    if (offset_us == -1 && PyErr_Occurred())
        return NULL;
    if (len < hdr_size)
        Py_RETURN_NONE;
    uint64_t nr = rd(p, F_NR), op = rd(p, F_OP), data_len = rd(p, F_DATA_LEN);
    if (io_name[nr] == NULL || rd(p, F_VERSION) != version
        || (op != op_syscall && op != op_tls) || (uint64_t)(len - hdr_size) < data_len)
        Py_RETURN_NONE;
    uint64_t ktime = rd(p, F_KTIME), latency = rd(p, F_LATENCY), arg = rd(p, F_ARG);
    uint64_t tgid = rd(p, F_TGID), tid = rd(p, F_TID), cookie = rd(p, F_COOKIE);
    uint64_t flags = rd(p, F_FLAGS);
    int64_t fd = rd_signed(p, F_FD), ret = rd_signed(p, F_RET);
    int64_t us = 0;
    if (ktime > UINT64_MAX - 500 || latency >= EXACT
        || __builtin_add_overflow((int64_t)((ktime + 500) / 1000), offset_us, &us)
        || us >= (int64_t)EXACT || us <= -(int64_t)EXACT)
        return PyObject_Vectorcall(fallback, args, 2, NULL);

    /* Sized for every key the pipeline adds later (comm, unit, captured, payload...): no
     * resize on the way (~0.1 us per event). */
    PyObject *ev = new_event(), *where = NULL, *direction, *out = NULL;
    if (ev == NULL)
        return NULL;
    if (set_new(ev, k_ts, PyFloat_FromDouble((double)us / 1e6)) < 0
        || PyDict_SetItem(ev, k_kind, io_kind[nr]) < 0
        || set_new(ev, k_pid, tgid_int(tgid)) < 0
        || set_new(ev, k_tid, tid == tgid ? tgid_int(tgid) : PyLong_FromUnsignedLongLong(tid)) < 0
        || set_new(ev, k_target, PyLong_FromUnsignedLongLong(cookie)) < 0
        || PyDict_SetItem(ev, k_syscall, io_name[nr]) < 0
        || set_new(ev, k_ret, PyLong_FromLongLong(ret)) < 0)
        goto fail;
    if (-4096 < ret && ret < 0 && io_is_syscall[nr]) { /* SSL_read's -1 is not an errno */
        PyObject *code = PyLong_FromLongLong(-ret), *name;
        if (code == NULL)
            goto fail;
        name = PyDict_GetItemWithError(errnames, code); /* borrowed */
        Py_DECREF(code);
        if (name != NULL && PyObject_IsTrue(name) == 1) {
            if (PyDict_SetItem(ev, k_errno, name) < 0)
                goto fail;
        } else if (PyErr_Occurred()
                   || set_new(ev, k_errno, PyUnicode_FromFormat("E%lld", (long long)-ret)) < 0) {
            goto fail;
        }
    }
    if (set_new(ev, k_latency, PyFloat_FromDouble((double)latency / 1000.0)) < 0)
        goto fail;
    if (io_is_tls[nr]) {
        char conn[32]; /* PyUnicode_FromFormat has no %llx before 3.12 */
        snprintf(conn, sizeof conn, "ssl:%llx", (unsigned long long)arg);
        where = PyUnicode_FromString(conn);
        if (where == NULL || PyDict_SetItem(ev, k_conn, where) < 0)
            goto fail;
        if (fd >= 0 && set_new(ev, k_fd, PyLong_FromLongLong(fd)) < 0)
            goto fail;
    } else {
        where = PyLong_FromLongLong(fd);
        if (where == NULL || PyDict_SetItem(ev, k_fd, where) < 0)
            goto fail;
        if (io_sized[nr] && set_new(ev, k_size, PyLong_FromUnsignedLongLong(arg)) < 0)
            goto fail;
    }
    direction = (flags & f_out) ? s_out : s_in;
    if (PyDict_SetItem(ev, k_direction, direction) < 0)
        goto fail;
    if ((flags & f_cipher) && PyDict_SetItem(ev, k_ciphertext, Py_True) < 0)
        goto fail;
    out = PyTuple_New(8);
    if (out == NULL)
        goto fail;
    PyTuple_SET_ITEM(out, 0, ev); /* steals both */
    PyTuple_SET_ITEM(out, 3, where);
    Py_INCREF(direction);
    PyTuple_SET_ITEM(out, 4, direction);
    PyObject *ints[5] = {tgid_int(tgid), PyLong_FromUnsignedLongLong(cookie),
                         PyLong_FromUnsignedLongLong(flags),
                         PyLong_FromUnsignedLongLong(data_len), PyLong_FromLongLong(ret)};
    static const int at[5] = {1, 2, 5, 6, 7};
    int bad = 0;
    for (int i = 0; i < 5; i++) {
        if (ints[i] == NULL)
            bad = 1;
        else
            PyTuple_SET_ITEM(out, at[i], ints[i]);
    }
    if (bad) {
        Py_DECREF(out); /* releases ev, where and what was set */
        return NULL;
    }
    return out;
fail:
    Py_DECREF(ev);
    Py_XDECREF(where);
    return NULL;
}

static PyMethodDef methods[] = {
    {"configure", configure, METH_VARARGS, "Give the record layout and the tables."},
    {"build", (PyCFunction)(void (*)(void))build, METH_FASTCALL,
     "build(raw, offset_us) -> (event, tgid, cookie, where, direction, flags, data_len, ret)"
     " or None"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "collector.capture._iobuild",
    "The pipeline's I/O record -> event build (collector/capture/iobuild.py), in C.", -1,
    methods,
};

PyMODINIT_FUNC PyInit__iobuild(void) { return PyModule_Create(&module); }
