"""The service: REST and gRPC APIs, access control, admission (back-pressure), one
identification observed (metrics, logs), reloading new index versions, the server entry."""
