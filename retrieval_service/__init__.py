"""Runtime side of whatart: Triton client, vector index, metadata store and the HTTP API.

Nothing here imports torch: the runtime only needs numpy, pillow, onnxruntime,
tritonclient and faiss.
"""
