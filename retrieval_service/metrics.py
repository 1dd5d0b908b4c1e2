"""Prometheus metrics of the retrieval service (scraped at /metrics; deploy/grafana charts them)."""

from prometheus_client import Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

IDENTIFY_REQUESTS = Counter(
    "whatart_identify_requests_total", "Identify requests by outcome", ["outcome"]
)
IDENTIFY_SECONDS = Histogram(
    "whatart_identify_seconds", "Time to answer an identification, by API (rest, grpc)", ["api"], buckets=LATENCY_BUCKETS
)
STAGE_SECONDS = Histogram(
    "whatart_stage_seconds",
    "Time spent per identification stage (decode, triton, search, metadata, verify)",
    ["stage"],
    buckets=LATENCY_BUCKETS,
)
DECIDED = Counter(
    "whatart_identify_decided_total", "Answered identifications by the cascade stage that decided (embedding, views, verified)",
    ["stage"],
)
GALLERY_ARTWORKS = Gauge("whatart_gallery_artworks", "Artworks in the served gallery")
INDEX_VECTORS = Gauge("whatart_index_vectors", "Vectors in the served gallery's index (artworks x gallery views)")
IN_FLIGHT = Gauge("whatart_identify_in_flight", "Identify requests being processed")
SEARCH_BATCH_QUERIES = Histogram(
    "whatart_search_batch_queries",
    "Queries searched together in one index search (search_batcher.py)",
    buckets=(1, 2, 4, 8, 16, 32, 64),
)


def serving(artworks: int, vectors: int) -> None:
    """The gauges of a newly served gallery."""
    GALLERY_ARTWORKS.set(artworks)
    INDEX_VECTORS.set(vectors)


TRITON_REQUESTS = Counter(
    "whatart_triton_requests_total", "Requests sent to each Triton replica, by outcome (ok, error)", ["endpoint", "outcome"]
)
