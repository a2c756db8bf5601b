"""deepserve: ONNX model serving with dynamic batching. Never imports torch or training/."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("deepserve")
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"
