"""Per-step identity and address checks over lists, in one native loop where a C++ compiler is present.

A flat plan confirms at every step that the parameters, gradients and state entries it steps are
still the objects and memory it planned for (``torch_flat.FlatPlan.holds``). Over 2000 parameters
those checks cost ~0.6 ms as Python-level passes (``map`` over attribute reads and ``data_ptr``
calls), as much as the kernel of the step. This module offers the four checks that make it up:

* ``same_objects(a, b)``: ``len(a) == len(b)`` and ``a[i] is b[i]`` for every i;
* ``attributes_are(objects, name, expected)``: ``getattr(objects[i], name) is expected[i]``;
* ``data_ptrs_are(tensors, addresses)``: ``tensors[i].data_ptr() == addresses[i]``;
* ``entries_are(dicts, keys, values)``: ``dicts[i].get(keys[i]) is values[i]``;
* ``views_hold(tensors, grads, addresses, grad_addresses)``: ``tensors[i].grad is grads[i]`` and, where the
  expected address is not None, ``tensors[i].data_ptr()`` and ``grads[i].data_ptr()`` equal it, in one pass
  (each parameter's objects are read once, while in cache: over 2000 parameters the separate passes cost
  ~40% more),

as ``CHECKS``: the native module (``native/checks.cpp``, built once with the system C++ compiler into
``$DYNOPT_CACHE_DIR`` or ``~/.cache/dynopt``, the way inductor builds its CPU kernels, and reading
data pointers through the function torch exports for inductor's compiled code), or, when it cannot be
built or loaded, Python passes with the same answers (``PythonChecks``). ``DYNOPT_NATIVE=0`` forces
the Python passes. Which one runs changes no result, only the time; ``tests/test_native_checks.py``
holds them equal.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import logging
import operator
import os
import shutil
import subprocess
import sysconfig
import tempfile
from pathlib import Path
from types import ModuleType

import torch

__all__ = ["CHECKS", "PythonChecks", "load_native", "native_available"]

_LOG = logging.getLogger("dynopt.torch")
_SOURCE = Path(__file__).with_name("native") / "checks.cpp"
_MODULE = "dynopt_native_checks"


class PythonChecks:
    """The checks as C-level Python passes (``map``), the fallback of the native module."""

    @staticmethod
    def same_objects(a: list, b: list) -> bool:
        return type(a) is type(b) is list and len(a) == len(b) and all(map(operator.is_, a, b))

    @staticmethod
    def attributes_are(objects: list, name: str, expected: list) -> bool:
        try:
            return (type(objects) is type(expected) is list and len(objects) == len(expected)
                    and all(map(operator.is_, map(operator.attrgetter(name), objects), expected)))
        except AttributeError:
            return False

    @staticmethod
    def data_ptrs_are(tensors: list, addresses: list) -> bool:
        try:
            return list(map(torch.Tensor.data_ptr, tensors)) == addresses
        except (TypeError, RuntimeError):  # not a tensor, or one without storage
            return False

    @staticmethod
    def views_hold(tensors: list, grads: list, addresses: list, grad_addresses: list) -> bool:
        if not (len(tensors) == len(grads) == len(addresses) == len(grad_addresses)
                and PythonChecks.attributes_are(tensors, "grad", grads)):
            return False
        try:
            return (list(map(_address_or_none, tensors, addresses)) == addresses
                    and list(map(_address_or_none, grads, grad_addresses)) == grad_addresses)
        except (TypeError, RuntimeError):  # not a tensor, or one without storage
            return False

    @staticmethod
    def entries_are(dicts: list, keys: list, values: list) -> bool:
        try:
            return (len(dicts) == len(keys) == len(values)
                    and all(map(operator.is_, map(dict.get, dicts, keys), values)))
        except TypeError:  # not a dict
            return False


def _address_or_none(tensor, expected):
    return None if expected is None else torch.Tensor.data_ptr(tensor)


def _cache_dir() -> Path:
    return Path(os.environ.get("DYNOPT_CACHE_DIR") or Path.home() / ".cache" / "dynopt")


def _build(target: Path) -> None:
    """Compile ``native/checks.cpp`` into ``target`` (written under another name, then renamed: parallel
    processes never load a half-written file)."""
    compiler = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")
    if compiler is None:
        raise RuntimeError("no C++ compiler (c++, g++ or clang++) on PATH")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, partial = tempfile.mkstemp(prefix=target.name, suffix=".part", dir=target.parent)
    os.close(fd)
    try:
        command = [compiler, "-O2", "-shared", "-fPIC", "-std=c++17", f"-I{sysconfig.get_paths()['include']}",
                   str(_SOURCE), "-o", partial]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed: {done.stderr.strip()[-2000:]}")
        os.replace(partial, target)
    finally:
        if os.path.exists(partial):
            os.remove(partial)


def load_native() -> ModuleType:
    """The native checks module, built on first use and cached per source, Python and torch version;
    raises (RuntimeError, OSError, ImportError) when it cannot be built or loaded."""
    data_ptr = getattr(getattr(torch._C, "_dynamo", None) and torch._C._dynamo.guards, "_torchinductor_pyobject_tensor_data_ptr", None)
    if not isinstance(data_ptr, int):
        raise RuntimeError(f"torch {torch.__version__} does not export the tensor data-pointer function")
    key = hashlib.sha256(_SOURCE.read_bytes() + sysconfig.get_config_var("EXT_SUFFIX").encode()
                         + torch.__version__.encode()).hexdigest()[:16]
    target = _cache_dir() / f"{_MODULE}-{key}{sysconfig.get_config_var('EXT_SUFFIX')}"
    if not target.exists():
        _build(target)
    spec = importlib.util.spec_from_file_location(_MODULE, target,
                                                  loader=importlib.machinery.ExtensionFileLoader(_MODULE, str(target)))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.bind(torch._C.TensorBase, data_ptr)
    return module


def _choose():
    if os.environ.get("DYNOPT_NATIVE", "1") == "0":
        return PythonChecks
    try:
        return load_native()
    except (RuntimeError, OSError, ImportError, subprocess.SubprocessError) as error:
        _LOG.debug("native checks unavailable, Python passes instead: %s", error)
        return PythonChecks


class _Lazy:
    """``CHECKS``: the native module or ``PythonChecks``, chosen (and built) at the first check."""

    def __getattr__(self, name: str):
        chosen = _choose()
        for attr in ("same_objects", "attributes_are", "data_ptrs_are", "views_hold", "entries_are"):
            setattr(self, attr, getattr(chosen, attr))
        self.native = chosen is not PythonChecks
        return getattr(self, name)


CHECKS = _Lazy()


def native_available() -> bool:
    """Whether ``CHECKS`` runs the native module (builds it if needed)."""
    return CHECKS.native
