"""deepserve: ONNX model serving with dynamic batching. Never imports torch or training/."""
