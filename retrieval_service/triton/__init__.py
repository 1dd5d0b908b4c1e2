"""The model: launching Triton, the gRPC client that embeds images through it (spread over
replicas), and the contract (tensor names, the recorded identity) export and runtime share."""
