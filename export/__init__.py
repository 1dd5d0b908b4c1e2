"""Build-time side of whatart: write the Triton model repository. SSCD (the default) comes as
an installed ONNX file and needs no torch; the torch-built encoders and the heads need the
`export` extra."""
