"""`whatart bench index`: how the vector index behaves at N vectors of D dimensions.

The gallery is the benchmark gallery's real embeddings (sharp view, from an ingested index)
plus distractors drawn from a model fitted to those embeddings (distractors.py); the
queries are real distorted copies (the `seed` protocol) of gallery works, encoded through
Triton. Exact search and the planned index are scored on the same queries: how often the
true work comes first (and in the first five), and how often the index's first answer is
exact search's (recall@1, @5). Search latency and memory are measured in a fresh process
that only loads the saved index, so the generation's temporaries do not count.
"""

from __future__ import annotations

import multiprocessing
import queue
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
from PIL import Image
from tqdm import tqdm
from whatart.retrieval_service.evaluation.distractors import EmbeddingModel, fidelity, lifting_map
from whatart.retrieval_service.evaluation.protocols import make_query
from whatart.retrieval_service.images import decode_image, to_model_input
from whatart.retrieval_service.index import recall, vector_index
from whatart.retrieval_service.index.gallery import Gallery
from whatart.retrieval_service.index.vector_index import IndexPlanError
from whatart.retrieval_service.triton.encoder import TritonEncoder

GENERATION_CHUNK = 50_000


@dataclass(frozen=True)
class BenchRequest:
    n: int
    dim: int
    queries: int
    kind: str
    memory_budget_mb: float
    exact_max_vectors: int
    seed: int = 0


async def encode_queries(gallery: Gallery, encoder: TritonEncoder, n: int, seed: int, max_pixels: int) -> tuple[np.ndarray, np.ndarray]:
    """(embeddings [n, dim], true row ids [n]) of `seed`-protocol copies of n gallery works."""
    served = await encoder.served_model()
    rows = np.sort(np.random.default_rng(seed).choice(len(gallery), min(n, len(gallery)), replace=False))
    artworks = gallery.metadata.by_row_ids(int(r) for r in rows)
    pixels = []
    for position, row in enumerate(tqdm(rows, desc="distorted copies", unit="img")):
        with Image.open(artworks[int(row)].image_path) as image:
            query = make_query("seed", image, seed, position)
        pixels.append(to_model_input(decode_image(query, max_pixels), served.input_size))
    batches = [np.stack(pixels[i : i + 32]) for i in range(0, len(pixels), 32)]
    vectors = np.concatenate([await encoder.encode(batch) for batch in batches])
    return vectors.astype(np.float32), rows.astype(np.int64)


def build_gallery_vectors(real: np.ndarray, request: BenchRequest, path: Path) -> tuple[np.memmap, dict]:
    """[n, dim] float32 on disk (memory-mapped): the real embeddings first (rows 0..len-1,
    their own row ids), then distractors; plus the fitted model's fidelity figures."""
    model = EmbeddingModel.fit(real, seed=request.seed)
    lifting = lifting_map(real.shape[1], request.dim, request.seed) if request.dim > real.shape[1] else None
    vectors = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(request.n, request.dim))
    count = min(len(real), request.n)
    vectors[:count] = real[:count] if lifting is None else real[:count] @ lifting
    rng = np.random.default_rng(request.seed + 1)
    for start in tqdm(range(count, request.n, GENERATION_CHUNK), desc="distractors", unit="chunk"):
        block = model.sample(min(GENERATION_CHUNK, request.n - start), rng)
        vectors[start : start + len(block)] = block if lifting is None else block @ lifting
    vectors.flush()
    return vectors, fidelity(model, real, seed=request.seed)


def _latency_worker(index_path: str, plan: vector_index.IndexPlan, queries: np.ndarray, results: multiprocessing.Queue) -> None:
    """In a fresh process: RSS of the loaded index and search latency at batch 1 and 64."""
    before = _rss_mb()
    index = vector_index.read_index(Path(index_path))
    vector_index.set_probes(index, plan)
    loaded = _rss_mb()
    figures: dict[str, float] = {"index_rss_mb": round(loaded - before, 1)}
    for batch in (1, 64):
        times = []
        rounds = max(200, len(queries)) if batch == 1 else 50
        for r in range(rounds):
            start = (r * batch) % max(1, len(queries) - batch)
            chunk = np.ascontiguousarray(queries[start : start + batch])
            started = time.perf_counter()
            vector_index.search(index, chunk, 5)
            times.append((time.perf_counter() - started) * 1e3)
        figures[f"batch{batch}_p50_ms"] = round(float(np.percentile(times, 50)), 3)
        figures[f"batch{batch}_p99_ms"] = round(float(np.percentile(times, 99)), 3)
    figures["process_rss_mb"] = round(_rss_mb(), 1)
    results.put(figures)


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measure_latency(index: faiss.Index, plan: vector_index.IndexPlan, queries: np.ndarray, directory: Path) -> dict[str, float]:
    path = directory / "index.faiss"
    vector_index.save_index(index, path)
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    worker = context.Process(target=_latency_worker, args=(str(path), plan, queries, results))
    worker.start()
    while worker.is_alive() or not results.empty():
        try:
            figures = results.get(timeout=1.0)
            break
        except queue.Empty:
            continue
    else:
        raise IndexPlanError(f"the latency process died (exit code {worker.exitcode}) loading {path}: out of memory? "
                             "try a smaller --n or --index-memory-mb")
    worker.join()
    return {**figures, "index_file_mb": round(path.stat().st_size / 2**20, 1)}


def rank_rates(found: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    return {"true_first": round(float(np.mean(found[:, 0] == truth)), 4),
            "true_in_top5": round(float(np.mean((found[:, :5] == truth[:, None]).any(axis=1))), 4)}


def run_bench(real: np.ndarray, queries: np.ndarray, truth: np.ndarray, request: BenchRequest) -> dict:
    """Everything `whatart bench index` prints, for one N and D."""
    if request.dim < real.shape[1]:
        raise IndexPlanError(f"--dim {request.dim} is below the encoder's {real.shape[1]} dimensions: the embeddings can only be lifted")
    with tempfile.TemporaryDirectory(prefix="whatart-bench-") as scratch:
        directory = Path(scratch)
        started = time.perf_counter()
        vectors, fit = build_gallery_vectors(real, request, directory / "vectors.npy")
        generation_s = time.perf_counter() - started
        lifted_queries = queries if request.dim == queries.shape[1] else queries @ lifting_map(queries.shape[1], request.dim, request.seed)
        lifted_queries = np.ascontiguousarray(lifted_queries, dtype=np.float32)
        ids = np.arange(request.n, dtype=np.int64)
        exact_ids = recall.exact_top_ids(vectors, ids, lifted_queries, 5)
        plan = vector_index.plan_index(request.n, request.dim, request.memory_budget_mb, request.exact_max_vectors, request.kind)
        started = time.perf_counter()
        index = vector_index.build_index(vectors, ids, plan, request.seed)
        build_s = time.perf_counter() - started
        _, found = vector_index.search(index, lifted_queries, 5)
        latency = measure_latency(index, plan, lifted_queries, directory)
    exact, approximate = rank_rates(exact_ids, truth), rank_rates(found, truth)
    return {
        "n": request.n, "dim": request.dim, "queries": len(queries), "real_embeddings": min(len(real), request.n),
        "distractors": max(0, request.n - len(real)), "distractor_fit": fit, "generation_s": round(generation_s, 1),
        "index": {"factory": plan.factory, "probes": plan.probes, "memory_budget_mb": request.memory_budget_mb,
                  "build_s": round(build_s, 1), **latency},
        "recall_at_1_vs_exact": round(float(np.mean(found[:, 0] == exact_ids[:, 0])), 4),
        "recall_at_5_vs_exact": round(float(np.mean((found == exact_ids[:, :1]).any(axis=1))), 4),
        "exact": exact, "approximate": approximate,
        "true_first_ratio": round(approximate["true_first"] / exact["true_first"], 4) if exact["true_first"] else None,
    }


def real_embeddings(gallery: Gallery) -> np.ndarray:
    """The sharp view (view 0) of every artwork, float32 [artworks, dim]."""
    return np.asarray(gallery.embeddings[:, 0, :], dtype=np.float32)


async def load_inputs(index_dir: Path, encoder: TritonEncoder, request: BenchRequest, max_pixels: int) -> tuple[np.ndarray, ...]:
    """(real embeddings, query embeddings, the queries' true rows) from an ingested gallery."""
    gallery = Gallery.load(index_dir)
    try:
        queries, truth = await encode_queries(gallery, encoder, request.queries, request.seed, max_pixels)
        return real_embeddings(gallery), queries, truth
    finally:
        gallery.close()
