// Identity and address checks over lists of objects, for the per-step check of a flat plan
// (dynopt/_backends/native_checks.py builds this file with the system C++ compiler and falls back
// to equivalent Python passes when it cannot). Each function returns True only when every item
// matches; anything unexpected (a non-tensor, a data pointer torch refuses to give) answers False,
// which makes the caller run its full check.
#define PY_SSIZE_T_CLEAN
#include <Python.h>

static void *(*tensor_data_ptr)(PyObject *) = nullptr;  // torch's: the data pointer of a tensor object
static PyTypeObject *tensor_type = nullptr;             // torch._C.TensorBase

static bool two_lists(PyObject *a, PyObject *b) {
    return PyList_CheckExact(a) && PyList_CheckExact(b) && PyList_GET_SIZE(a) == PyList_GET_SIZE(b);
}

// same_objects(a, b): len(a) == len(b) and a[i] is b[i] for every i
static PyObject *same_objects(PyObject *, PyObject *args) {
    PyObject *a, *b;
    if (!PyArg_ParseTuple(args, "OO", &a, &b)) return nullptr;
    if (!two_lists(a, b)) Py_RETURN_FALSE;
    for (Py_ssize_t i = 0, n = PyList_GET_SIZE(a); i < n; i++)
        if (PyList_GET_ITEM(a, i) != PyList_GET_ITEM(b, i)) Py_RETURN_FALSE;
    Py_RETURN_TRUE;
}

// attributes_are(objects, name, expected): getattr(objects[i], name) is expected[i] for every i
static PyObject *attributes_are(PyObject *, PyObject *args) {
    PyObject *objects, *name, *expected;
    if (!PyArg_ParseTuple(args, "OUO", &objects, &name, &expected)) return nullptr;
    if (!two_lists(objects, expected)) Py_RETURN_FALSE;
    for (Py_ssize_t i = 0, n = PyList_GET_SIZE(objects); i < n; i++) {
        PyObject *value = PyObject_GetAttr(PyList_GET_ITEM(objects, i), name);
        if (value == nullptr) {
            PyErr_Clear();
            Py_RETURN_FALSE;
        }
        bool same = value == PyList_GET_ITEM(expected, i);
        Py_DECREF(value);
        if (!same) Py_RETURN_FALSE;
    }
    Py_RETURN_TRUE;
}

// address_is(tensor, expected): expected is None, or tensor.data_ptr() == expected (False for a non-tensor or
// a tensor torch gives no data pointer for)
static bool address_is(PyObject *tensor, PyObject *expected) {
    if (expected == Py_None) return true;
    if (!PyObject_TypeCheck(tensor, tensor_type)) return false;
    void *address;
    try {
        address = tensor_data_ptr(tensor);
    } catch (...) {
        return false;
    }
    void *value = PyLong_AsVoidPtr(expected);
    if (value == nullptr && PyErr_Occurred()) {
        PyErr_Clear();
        return false;
    }
    return address == value;
}

// data_ptrs_are(tensors, addresses): tensors[i].data_ptr() == addresses[i] for every i
static PyObject *data_ptrs_are(PyObject *, PyObject *args) {
    PyObject *tensors, *addresses;
    if (!PyArg_ParseTuple(args, "OO", &tensors, &addresses)) return nullptr;
    if (!two_lists(tensors, addresses) || tensor_data_ptr == nullptr) Py_RETURN_FALSE;
    for (Py_ssize_t i = 0, n = PyList_GET_SIZE(tensors); i < n; i++) {
        PyObject *expected = PyList_GET_ITEM(addresses, i);
        if (expected == Py_None || !address_is(PyList_GET_ITEM(tensors, i), expected)) Py_RETURN_FALSE;
    }
    Py_RETURN_TRUE;
}

// views_hold(tensors, grads, addresses, grad_addresses): in one pass over the tensors (each one's objects
// are read once, while in cache), for every i: tensors[i].grad is grads[i], and where addresses[i] /
// grad_addresses[i] is not None, tensors[i].data_ptr() / grads[i].data_ptr() equals it
static PyObject *grad_name = nullptr;

static PyObject *views_hold(PyObject *, PyObject *args) {
    PyObject *tensors, *grads, *addresses, *grad_addresses;
    if (!PyArg_ParseTuple(args, "OOOO", &tensors, &grads, &addresses, &grad_addresses)) return nullptr;
    if (!two_lists(tensors, grads) || !two_lists(tensors, addresses) || !two_lists(tensors, grad_addresses)
        || tensor_data_ptr == nullptr)
        Py_RETURN_FALSE;
    for (Py_ssize_t i = 0, n = PyList_GET_SIZE(tensors); i < n; i++) {
        PyObject *tensor = PyList_GET_ITEM(tensors, i);
        PyObject *grad = PyObject_GetAttr(tensor, grad_name);
        if (grad == nullptr) {
            PyErr_Clear();
            Py_RETURN_FALSE;
        }
        bool same = grad == PyList_GET_ITEM(grads, i);
        Py_DECREF(grad);  // the expected list keeps it alive
        if (!same || !address_is(tensor, PyList_GET_ITEM(addresses, i))
            || !address_is(PyList_GET_ITEM(grads, i), PyList_GET_ITEM(grad_addresses, i)))
            Py_RETURN_FALSE;
    }
    Py_RETURN_TRUE;
}

// entries_are(dicts, keys, values): dicts[i].get(keys[i]) is values[i] for every i (dicts are dicts)
static PyObject *entries_are(PyObject *, PyObject *args) {
    PyObject *dicts, *keys, *values;
    if (!PyArg_ParseTuple(args, "OOO", &dicts, &keys, &values)) return nullptr;
    if (!two_lists(dicts, keys) || !two_lists(dicts, values)) Py_RETURN_FALSE;
    for (Py_ssize_t i = 0, n = PyList_GET_SIZE(dicts); i < n; i++) {
        PyObject *d = PyList_GET_ITEM(dicts, i);
        if (!PyDict_Check(d)) Py_RETURN_FALSE;
        PyObject *value = PyDict_GetItemWithError(d, PyList_GET_ITEM(keys, i));  // borrowed
        if (value == nullptr && PyErr_Occurred()) {
            PyErr_Clear();
            Py_RETURN_FALSE;
        }
        if ((value == nullptr ? Py_None : value) != PyList_GET_ITEM(values, i)) Py_RETURN_FALSE;  // missing: None
    }
    Py_RETURN_TRUE;
}

// bind(tensor_type, data_ptr_address): torch's tensor base class and its data-pointer function
static PyObject *bind(PyObject *, PyObject *args) {
    PyObject *type;
    unsigned long long address;
    if (!PyArg_ParseTuple(args, "OK", &type, &address)) return nullptr;
    if (!PyType_Check(type)) {
        PyErr_SetString(PyExc_TypeError, "bind: expected a type");
        return nullptr;
    }
    Py_INCREF(type);
    tensor_type = reinterpret_cast<PyTypeObject *>(type);
    tensor_data_ptr = reinterpret_cast<void *(*)(PyObject *)>(address);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"same_objects", same_objects, METH_VARARGS, "len(a) == len(b) and a[i] is b[i] for every i"},
    {"attributes_are", attributes_are, METH_VARARGS, "getattr(objects[i], name) is expected[i] for every i"},
    {"data_ptrs_are", data_ptrs_are, METH_VARARGS, "tensors[i].data_ptr() == addresses[i] for every i"},
    {"views_hold", views_hold, METH_VARARGS, "one pass: .grad is grads[i], and the data pointers where expected"},
    {"entries_are", entries_are, METH_VARARGS, "dicts[i].get(keys[i]) is values[i] for every i"},
    {"bind", bind, METH_VARARGS, "bind(tensor_type, data_ptr_function_address)"},
    {nullptr, nullptr, 0, nullptr},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "dynopt_native_checks", nullptr, -1, methods};

PyMODINIT_FUNC PyInit_dynopt_native_checks(void) {
    grad_name = PyUnicode_InternFromString("grad");
    if (grad_name == nullptr) return nullptr;
    return PyModule_Create(&module);
}
