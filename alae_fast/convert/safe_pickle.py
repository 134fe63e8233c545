"""A stub-tolerant, restricted unpickler for torch.load(pickle_module=...).

Only tensor rebuild functions, torch dtypes/sizes/devices, OrderedDict and plain builtin
containers resolve to real objects. Every other global (optimizer/scheduler/tracker classes,
numpy, os.system, ...) resolves to an inert `Stub` subclass that just records its arguments,
so nothing from the file is imported or executed.
"""

from __future__ import annotations

import builtins
import collections
import io
import pickle
import sys

import torch
import torch._utils

_ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch", "Size"): torch.Size,
    ("torch", "device"): torch.device,
    ("torch", "Tensor"): torch.Tensor,
    ("torch.nn.parameter", "Parameter"): torch.nn.Parameter,
    ("torch._utils", "_rebuild_tensor"): torch._utils._rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): torch._utils._rebuild_parameter_with_state,
}
_BUILTINS = {"dict", "list", "tuple", "set", "frozenset", "int", "float", "bool", "str", "bytes",
             "bytearray", "complex", "slice"}


class Stub:
    """Stands in for a class or function the file names but we do not trust or need."""

    stub_of = "?"

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs, self.state = args, kwargs, None

    def __setstate__(self, state):
        self.state = state

    def __repr__(self):
        return f"<stub {self.stub_of}>"


def _stub(module: str, name: str) -> type:
    return type(name, (Stub,), {"stub_of": f"{module}.{name}", "__module__": __name__})


def resolve(module: str, name: str):
    """The allowed object for a pickled global, else a fresh Stub subclass."""
    if (module, name) in _ALLOWED:
        return _ALLOWED[(module, name)]
    if module in ("builtins", "__builtin__") and name in _BUILTINS:
        return getattr(builtins, name)
    if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
        return getattr(torch, name)
    return _stub(module, name)


class Unpickler(pickle.Unpickler):
    def find_class(self, module, name):
        return resolve(module, name)


def load(file, **kwargs):
    return Unpickler(file, **kwargs).load()


def loads(data: bytes, **kwargs):
    return load(io.BytesIO(data), **kwargs)


def torch_load(path) -> object:
    """torch.load of a (zip or legacy) checkpoint through this module, tensors on the CPU."""
    return torch.load(path, map_location="cpu", pickle_module=sys.modules[__name__], weights_only=False)
