"""Offline training for deepserve: CNN image classifiers and the fraud MLP, exported to ONNX."""
