"""Prometheus metrics of the retrieval service (scraped at /metrics)."""

from prometheus_client import Counter, Gauge, Histogram

IDENTIFY_REQUESTS = Counter(
    "whatart_identify_requests_total", "Identify requests by outcome", ["outcome"]
)
STAGE_SECONDS = Histogram(
    "whatart_stage_seconds",
    "Time spent per identification stage",
    ["stage"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
GALLERY_ARTWORKS = Gauge("whatart_gallery_artworks", "Artworks in the served gallery")
IN_FLIGHT = Gauge("whatart_identify_in_flight", "Identify requests being processed")
SEARCH_BATCH_QUERIES = Histogram(
    "whatart_search_batch_queries",
    "Queries searched together in one index search (search_batcher.py)",
    buckets=(1, 2, 4, 8, 16, 32, 64),
)
