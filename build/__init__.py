"""Build stage: load a DistilBERT checkpoint, export it to ONNX and check it against PyTorch."""
