"""Pickle-free checkpoints of JAX pytrees: optax states of ``dynopt.jax``, parameters, anything.

    >>> import dynopt.checkpoint
    >>> dynopt.checkpoint.save("ckpt.npz", {"params": params, "opt_state": state, "step": 100})
    >>> restored = dynopt.checkpoint.load("ckpt.npz", like={"params": params, "opt_state": state, "step": 0})

``like`` is a template with the structure, shapes and dtypes expected (for instance the state a
freshly built optimizer returns from ``init``); ``load`` rebuilds the tree with the template's
structure (so NamedTuple states come back as the optimizer's own state type) and puts each leaf
where the template's leaf lives (the same sharding, for a ``jax.Array``).

Format (version 1): an uncompressed NumPy ``.npz`` archive, written to a temporary file in the same
folder and renamed into place (a reader never sees a half-written file), read back with
``allow_pickle=False``:

* ``leaf_00000``, ``leaf_00001``, …: the leaves in ``jax.tree_util`` flattening order (None is not
  a leaf), as NumPy arrays; a dtype NumPy cannot store (bfloat16, float8, …) is stored as the
  unsigned integers of the same width and viewed back on load;
* ``__dynopt_checkpoint__``: a 0-d unicode array holding JSON::

      {"format": "dynopt.checkpoint", "version": 1,
       "treedef": "<str() of the jax treedef>",
       "leaves": [{"path": "<jax.tree_util.keystr of the leaf's path>", "shape": [...], "dtype": "<name>"}, ...]}

``load`` raises ``ValueError`` before returning anything when the file is not such an archive or
when the number of leaves, a leaf's path, shape or dtype, or the tree structure differs from
``like``'s, naming the first difference (a checkpoint of another optimizer differs in its state's
type and field names). ``check_structure=False`` skips only the comparison of the treedef text
(for a checkpoint written by a jax whose treedef text differs); every leaf is still checked.

Importing this module does not import jax; ``save`` and ``load`` do.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from typing import Any

import numpy as np

__all__ = ["save", "load", "FORMAT", "VERSION"]

FORMAT = "dynopt.checkpoint"
VERSION = 1
_META = "__dynopt_checkpoint__"
_NATIVE_KINDS = "biufc"  # bool, signed, unsigned, float, complex: dtypes .npz stores as themselves


def _describe(tree) -> tuple[list[dict[str, Any]], list[np.ndarray], str]:
    import jax

    flat, treedef = jax.tree_util.tree_flatten_with_path(tree)
    entries, arrays = [], []
    for path, leaf in flat:
        array = np.asarray(leaf)
        entries.append({"path": jax.tree_util.keystr(path), "shape": list(array.shape), "dtype": str(array.dtype)})
        arrays.append(array)
    return entries, arrays, str(treedef)


def save(path: str | os.PathLike, tree: Any) -> None:
    """Write ``tree`` (any pytree of arrays and numbers) to ``path`` in the format above, atomically."""
    entries, arrays, treedef = _describe(tree)
    payload = {f"leaf_{i:05d}": a if a.dtype.kind in _NATIVE_KINDS else a.view(f"u{a.dtype.itemsize}")
               for i, a in enumerate(arrays)}
    payload[_META] = np.array(json.dumps({"format": FORMAT, "version": VERSION, "treedef": treedef, "leaves": entries}))
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".npz")
    try:
        with os.fdopen(handle, "wb") as file:
            np.savez(file, **payload)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


def _read(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    try:
        with np.load(os.fspath(path), allow_pickle=False) as archive:
            if _META not in archive.files:
                raise ValueError(f"{os.fspath(path)!r} is not a dynopt checkpoint: it has no {_META!r} entry")
            meta = json.loads(str(archive[_META]))
            arrays = {name: archive[name] for name in archive.files if name != _META}
    except (OSError, zipfile.BadZipFile, json.JSONDecodeError) as err:
        raise ValueError(f"{os.fspath(path)!r} is not a readable dynopt checkpoint: {err}") from None
    except ValueError as err:
        if "dynopt checkpoint" in str(err):
            raise
        raise ValueError(f"{os.fspath(path)!r} is not a readable dynopt checkpoint: {err}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or meta.get("version") != VERSION:
        found = (meta.get("format"), meta.get("version")) if isinstance(meta, dict) else meta
        raise ValueError(f"{os.fspath(path)!r}: unsupported checkpoint format {found}, expected ({FORMAT!r}, {VERSION})")
    return meta, arrays


def load(path: str | os.PathLike, like: Any, *, check_structure: bool = True) -> Any:
    """Read a checkpoint written by :func:`save`; ``like`` gives the expected tree (see the module doc)."""
    import jax
    import jax.numpy as jnp

    meta, arrays = _read(path)
    expected, _, treedef_text = _describe(like)
    saved = meta["leaves"]
    where = os.fspath(path)
    if len(saved) != len(expected):
        raise ValueError(f"{where!r} holds {len(saved)} leaves, the template has {len(expected)} "
                         f"(saved structure {meta['treedef']}, template {treedef_text})")
    for i, (got, want) in enumerate(zip(saved, expected)):
        for key in ("path", "shape", "dtype"):
            if got[key] != want[key]:
                raise ValueError(f"{where!r}: leaf {i} has {key} {got[key]!r}, the template's leaf {want['path']} has {want[key]!r}")
    if check_structure and meta["treedef"] != treedef_text:
        raise ValueError(f"{where!r}: the saved tree structure {meta['treedef']} differs from the template's {treedef_text}")
    leaves, treedef = jax.tree_util.tree_flatten(like)
    restored = []
    for i, (entry, template) in enumerate(zip(saved, leaves)):
        name = f"leaf_{i:05d}"
        if name not in arrays:
            raise ValueError(f"{where!r}: leaf {i} ({entry['path']}) is missing from the archive")
        dtype = jnp.dtype(entry["dtype"])
        array = arrays[name]
        if array.dtype != dtype:
            if dtype.kind in _NATIVE_KINDS or array.dtype != np.dtype(f"u{dtype.itemsize}"):
                raise ValueError(f"{where!r}: leaf {i} ({entry['path']}) is stored as {array.dtype}, not {dtype}")
            array = array.view(dtype)
        if list(array.shape) != entry["shape"]:
            raise ValueError(f"{where!r}: leaf {i} ({entry['path']}) has shape {array.shape}, its description says {entry['shape']}")
        if isinstance(template, jax.Array):
            restored.append(jax.device_put(array, template.sharding))
        elif isinstance(template, np.ndarray):
            restored.append(array)
        elif isinstance(template, np.generic):
            restored.append(array[()])
        else:  # a Python number
            restored.append(type(template)(array.item()))
    return jax.tree_util.tree_unflatten(treedef, restored)
