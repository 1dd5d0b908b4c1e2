"""The `whatart` subcommands, one module per family: each registers its parsers and handles them,
importing only what its commands need (the runtime ones work without torch)."""
