"""cnncy.save / cnncy.load: checkpoints as a plain .npz, without pickle.

    cnncy.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": 3}, "ckpt.pt")
    checkpoint = cnncy.load("ckpt.pt")

Format (version 1).  The file is an uncompressed numpy .npz archive (a zip of
.npy files, as written by numpy.savez) holding:

- `__cnncy__`: a uint8 array, the UTF-8 text of a JSON document
  `{"format": "cnncy", "version": 1, "root": NODE}` describing the saved object;
- `a0`, `a1`, ...: the arrays that the nodes refer to, in their own dtype and shape.

A NODE is one of
- JSON null, true, false, a number or a string: that Python value (floats are
  written with repr, so they come back bit for bit; NaN and Infinity included);
- `{"list": [NODE, ...]}`, `{"tuple": [NODE, ...]}`;
- `{"dict": [[KEY_NODE, NODE], ...]}` or `{"ordered_dict": ...}`: the items in
  order, keys encoded as nodes so int keys (optimizer state) stay ints;
- `{"tensor": "aN", "requires_grad": bool}`: a cnncy Tensor holding array aN
  (with `"parameter": true` added for an nn.Parameter, which comes back as one);
- `{"ndarray": "aN"}`: a numpy array; `{"scalar": "aN"}`: a numpy scalar (0-d aN).

Loading reads the arrays with allow_pickle=False, so a checkpoint can never run
code; anything that is not such a file raises a RuntimeError naming it.
"""
import collections
import json
import os
import tempfile
import zipfile

import numpy as np

from .nn.parameter import Parameter
from .tensor import Tensor

FORMAT = "cnncy"
VERSION = 1
_STRUCTURE_KEY = "__cnncy__"


class _Encoder:
    """Turns an object into a JSON-able node tree, collecting its arrays on the side."""

    def __init__(self):
        self.arrays = {}

    def _add_array(self, array, where):
        if array.dtype.hasobject:
            raise TypeError(f"save: cannot save an array of dtype object at {where}")
        name = f"a{len(self.arrays)}"
        self.arrays[name] = array
        return name

    def encode(self, obj, where="obj"):
        if obj is None or isinstance(obj, (bool, str)):
            return obj
        if isinstance(obj, int):
            return int(obj)
        if isinstance(obj, float):
            return float(obj)
        if isinstance(obj, Tensor):
            node = {"tensor": self._add_array(obj._array, where), "requires_grad": obj.requires_grad}
            if isinstance(obj, Parameter):
                node["parameter"] = True
            return node
        if isinstance(obj, np.ndarray):
            return {"ndarray": self._add_array(obj, where)}
        if isinstance(obj, np.generic):
            return {"scalar": self._add_array(np.asarray(obj), where)}
        if isinstance(obj, dict):
            tag = "ordered_dict" if isinstance(obj, collections.OrderedDict) else "dict"
            return {tag: [[self.encode(key, f"{where} key {key!r}"), self.encode(value, f"{where}[{key!r}]")]
                          for key, value in obj.items()]}
        if isinstance(obj, (list, tuple)):
            tag = "tuple" if isinstance(obj, tuple) else "list"
            return {tag: [self.encode(item, f"{where}[{i}]") for i, item in enumerate(obj)]}
        raise TypeError(f"save: cannot save an object of type {type(obj).__name__} at {where} "
                        f"(supported: dict, list, tuple, str, int, float, bool, None, Tensor, ndarray)")


def _decode(node, arrays):
    if node is None or isinstance(node, (bool, int, float, str)):
        return node
    if isinstance(node, dict) and "tensor" in node:
        cls = Parameter if node.get("parameter") else Tensor
        return cls(arrays[node["tensor"]], requires_grad=bool(node["requires_grad"]))
    if not isinstance(node, dict) or len(node) != 1:
        raise ValueError(f"malformed structure node {node!r}")
    (tag, body), = node.items()
    if tag == "ndarray":
        return arrays[body]
    if tag == "scalar":
        return arrays[body][()]
    if tag in ("list", "tuple"):
        items = [_decode(item, arrays) for item in body]
        return tuple(items) if tag == "tuple" else items
    if tag in ("dict", "ordered_dict"):
        mapping = collections.OrderedDict() if tag == "ordered_dict" else {}
        for key, value in body:
            mapping[_decode(key, arrays)] = _decode(value, arrays)
        return mapping
    raise ValueError(f"unknown node type {tag!r}")


def save(obj, f):
    """Saves `obj` (nested dicts/lists/tuples of Tensors, arrays and plain values) to `f`.

    Args:
        obj: e.g. `model.state_dict()` or a dict holding state dicts, an epoch and an RNG state.
        f (str, os.PathLike or a binary file object): where to write.  A path is written
            atomically: to a temporary file in the same folder, renamed into place when complete.
    """
    encoder = _Encoder()
    root = encoder.encode(obj)
    structure = json.dumps({"format": FORMAT, "version": VERSION, "root": root})
    arrays = {_STRUCTURE_KEY: np.frombuffer(structure.encode("utf-8"), dtype=np.uint8), **encoder.arrays}
    if hasattr(f, "write"):
        np.savez(f, **arrays)
        return
    path = os.fspath(f)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp_path = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path), suffix=".part")
    try:
        with os.fdopen(fd, "wb") as tmp:
            np.savez(tmp, **arrays)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)
        raise


def _read_arrays(f):
    """Every array in the .npz `f` (structure entry included), read without pickle."""
    archive = np.load(f, allow_pickle=False)
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ValueError("it is a single .npy array, not an archive")
    with archive:
        if _STRUCTURE_KEY not in archive.files:
            raise ValueError(f"the archive has no {_STRUCTURE_KEY} structure entry")
        arrays = {key: archive[key] for key in archive.files}
    for key, array in arrays.items():
        if not isinstance(array, np.ndarray):  # numpy hands back non-.npy members as raw bytes
            raise ValueError(f"archive member {key!r} is not a .npy array")
    return arrays


def _read_header(structure):
    header = json.loads(structure.tobytes().decode("utf-8"))
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ValueError("the structure entry is not a cnncy header")
    if header.get("version") != VERSION:
        raise ValueError(f"unsupported version {header.get('version')!r} (this cnncy reads {VERSION})")
    return header


def load(f, map_location=None, weights_only=None):
    """Loads an object written by `save`; Tensors come back as cnncy Tensors.

    Args:
        f (str, os.PathLike or a binary file object): what to read.
        map_location, weights_only: accepted for torch compatibility and ignored: everything
            lives on the CPU, and loading never runs code (no pickle), whatever weights_only says.
    """
    name = getattr(f, "name", repr(f)) if hasattr(f, "read") else os.fspath(f)
    if not hasattr(f, "read") and not os.path.isfile(name):
        raise FileNotFoundError(f"load: no such file: {name!r}")
    try:
        arrays = _read_arrays(f)
        header = _read_header(arrays.pop(_STRUCTURE_KEY))
        return _decode(header["root"], arrays)
    except (ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as error:
        # UnicodeDecodeError and JSONDecodeError are ValueErrors.
        raise RuntimeError(f"load: {name} is not a valid cnncy checkpoint: {error}") from error
