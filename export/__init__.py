"""Build-time side of whatart: turn a torch backbone into an ONNX embedding model and a
Triton model repository. The only part of the project that needs torch."""
