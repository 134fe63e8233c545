"""Image data: in-memory, file-folder and prepared-record streams behind one interface.

Imports only torch/numpy/PIL/DALI and alae_fast.ops. DALI is optional and imported lazily.
"""

from .builtin import BUILTINS, load_builtin, load_mnist, mnist_protocol
from .streams import LOADERS, make_stream
from .streams.base import ImageStream, TensorStream

__all__ = ["ImageStream", "TensorStream", "make_stream", "load_builtin", "load_mnist", "mnist_protocol", "BUILTINS",
           "LOADERS"]
