"""User-facing side of whatart: the `whatart` CLI, the REST client and the Gradio UI."""
