"""The FAISS index over unit vectors (inner product = cosine similarity).

Small galleries get exact search. Past a size, or when exact vectors would not fit the
memory budget, the index is a two-stage IVF, chosen from `whatart bench index` runs
(docs/galleries.md, docs/performance.md):

1. an uncentred PCA (the top eigenvectors of the vectors' second moment) down to the largest
   dimension the memory budget allows; FAISS's own PCA centres the data, which shifts every
   inner product by a per-vector term: at 170k vectors it cut recall@1 from 0.94 to 0.64;
2. an inverted file whose lists hold 4-bit product-quantised codes (one per 4 dimensions)
   scanned with SIMD ("fast scan"), probed wide (a quarter of the lists: a distorted photo
   sits far from its original, so narrow probing misses it); with 8 dimensions per code
   the true-first rate at 10^6 vectors fell to 94 % of exact search's;
3. the best REFINE_CANDIDATES re-ranked on 8-bit scalar-quantised vectors.

The exact vectors themselves live beside the index as float16 (layout.EMBEDDINGS,
memory-mapped), so shortlisted candidates are re-scored exactly and add/remove never
re-encode.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
from whatart.retrieval_service.errors import WhatartError

log = logging.getLogger(__name__)


class IndexPlanError(WhatartError, ValueError):
    """No index of the asked kind fits; the message says which setting to change."""


EXACT = "exact"
IVF = "ivf"
TRAINING_SAMPLE = 100_000
REFINE_CANDIDATES = 2000
"""Candidates of the fast-scan stage re-ranked on 8-bit vectors (at least 2 per result)."""


@dataclass(frozen=True)
class IndexPlan:
    """What to build: an exact index, or a two-stage IVF with these parameters."""

    kind: str
    dim: int
    reduced_dim: int = 0
    lists: int = 0
    probes: int = 0

    @property
    def factory(self) -> str:
        """A readable description (FAISS factory syntax where FAISS has one)."""
        if self.kind == EXACT:
            return "Flat"
        return f"UPCA{self.reduced_dim},IVF{self.lists},PQ{self.pq_codes}x4fs,RefineSQ8"

    @property
    def pq_codes(self) -> int:
        """4-bit sub-quantisers of the fast-scan stage: one per 4 reduced dimensions."""
        return self.reduced_dim // 4

    def bytes_per_vector(self) -> int:
        """Codes + refinement vector + id."""
        return 4 * self.dim if self.kind == EXACT else self.pq_codes // 2 + self.reduced_dim + 8

    def fixed_bytes(self) -> int:
        """What does not grow with the vectors: PCA matrix, list centroids, fast-scan padding
        (lists are stored in blocks of 32 codes), PQ codebooks."""
        if self.kind == EXACT:
            return 0
        return 4 * self.reduced_dim * (self.dim + self.lists) + self.lists * 32 * self.pq_codes // 2 + 64 * self.reduced_dim


def plan_index(n_vectors: int, dim: int, memory_budget_mb: float, exact_max_vectors: int, kind: str = "auto") -> IndexPlan:
    """Exact while it fits the budget and stays fast (`exact_max_vectors`); otherwise an IVF
    with about 4 sqrt(n) lists whose reduced dimension is the largest multiple of 64 (at most
    `dim` and 1024) for which codes, ids, PCA matrix and list centroids fit the budget."""
    if kind not in ("auto", EXACT, IVF):
        raise IndexPlanError(f"index kind must be auto, {EXACT} or {IVF}, got {kind!r}")
    budget = memory_budget_mb * 2**20
    if kind == EXACT or (kind == "auto" and n_vectors <= exact_max_vectors and 4 * dim * n_vectors <= budget):
        return IndexPlan(EXACT, dim)
    lists = int(min(65536, max(16, 4 * np.sqrt(n_vectors))))
    for reduced in range(min(dim, 1024) // 64 * 64, 0, -64):
        plan = IndexPlan(IVF, dim, reduced, lists, probes=max(8, lists // 4))
        if plan.bytes_per_vector() * n_vectors + plan.fixed_bytes() <= budget:
            return plan
    raise IndexPlanError(f"{n_vectors:,} vectors do not fit a {memory_budget_mb:g} MB index even at 64 dimensions: raise the memory budget")


def uncentred_pca(sample: np.ndarray, dimensions: int) -> faiss.LinearTransform:
    """Projection on the top eigenvectors of sample^T sample: keeps inner products' energy
    without the mean shift a centred PCA would add to every score."""
    moment = sample.astype(np.float64).T @ sample.astype(np.float64)
    _, vectors = np.linalg.eigh(moment)
    top = np.ascontiguousarray(vectors[:, ::-1][:, :dimensions].T, dtype=np.float32)  # [dimensions, dim]
    transform = faiss.LinearTransform(sample.shape[1], dimensions, False)
    faiss.copy_array_to_vector(top.ravel(), transform.A)
    transform.is_trained = True
    return transform


def _ivf(plan: IndexPlan, sample: np.ndarray) -> faiss.Index:
    """The untrained-lists two-stage index of the module docstring, with ids."""
    metric = faiss.METRIC_INNER_PRODUCT
    scan = faiss.index_factory(plan.reduced_dim, f"IVF{plan.lists},PQ{plan.pq_codes}x4fs", metric)
    refined = faiss.IndexRefine(scan, faiss.IndexScalarQuantizer(plan.reduced_dim, faiss.ScalarQuantizer.QT_8bit, metric))
    return faiss.IndexIDMap(faiss.IndexPreTransform(uncentred_pca(sample, plan.reduced_dim), refined))


def build_index(vectors: np.ndarray, ids: np.ndarray, plan: IndexPlan, seed: int = 0) -> faiss.Index:
    """The planned index over `vectors`, each labelled with its artwork's row id; an IVF
    is trained on a random sample of at most TRAINING_SAMPLE vectors."""
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    if plan.kind == EXACT:
        index = faiss.IndexIDMap(faiss.IndexFlatIP(plan.dim))
    else:
        started = time.perf_counter()
        picked = np.sort(np.random.default_rng(seed).choice(len(vectors), min(len(vectors), TRAINING_SAMPLE), replace=False))
        sample = np.ascontiguousarray(vectors[picked], dtype=np.float32)
        index = _ivf(plan, sample)
        index.train(sample)
        log.info("trained %s on %d vectors in %.1f s", plan.factory, len(sample), time.perf_counter() - started)
    add_vectors(index, vectors, ids)
    set_probes(index, plan)
    return index


def add_vectors(index: faiss.Index, vectors: np.ndarray, ids: np.ndarray, chunk: int = 65536) -> None:
    """Add in chunks so that the temporary copies FAISS makes stay small."""
    for start in range(0, len(vectors), chunk):
        index.add_with_ids(np.ascontiguousarray(vectors[start : start + chunk], dtype=np.float32),
                           np.ascontiguousarray(ids[start : start + chunk], dtype=np.int64))


def _inside_id_map(index: faiss.Index) -> faiss.Index:
    """The index an IndexIDMap wraps (whose ids are positions), else `index` itself."""
    return faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap) else index


def _refine_stage(index: faiss.Index) -> faiss.IndexRefine | None:
    """The re-ranking stage of a two-stage IVF (IDMap -> PreTransform -> Refine), else None."""
    inner = _inside_id_map(index)
    if isinstance(inner, faiss.IndexPreTransform):
        refine = faiss.downcast_index(inner.index)
        return refine if isinstance(refine, faiss.IndexRefine) else None
    return None


def set_probes(index: faiss.Index, plan: IndexPlan) -> None:
    refine = _refine_stage(index)
    if refine is not None:
        faiss.extract_index_ivf(refine.base_index).nprobe = plan.probes


def allow(positions: np.ndarray) -> faiss.IDSelector:
    """A restriction of `search` to these vectors, given by position (the order they were
    added in); build it once per filter and reuse it: building costs more than a search."""
    return faiss.IDSelectorBatch(np.ascontiguousarray(positions, dtype=np.int64))


def search(index: faiss.Index, queries: np.ndarray, k: int, allowed: faiss.IDSelector | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(scores, ids) of the k best per query; a two-stage IVF re-ranks REFINE_CANDIDATES
    (or 2k, if more) fast-scan candidates. `allowed` (from `allow`): search only those
    vectors, e.g. the views of the artworks a filter keeps. CPU indexes only: FAISS's GPU
    indexes do not apply selectors."""
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    k_factor = max(2.0, REFINE_CANDIDATES / max(k, 1))
    refine = _refine_stage(index)
    if refine is not None:
        refine.k_factor = k_factor
    if allowed is None:
        return index.search(queries, k)
    # Selectors see the ids of the index they are given to: search inside the id map, where
    # ids are positions, then translate (the IVF's own ids are positions too).
    inner = _inside_id_map(index)
    if refine is not None:
        probes = faiss.extract_index_ivf(refine.base_index).nprobe
        base = faiss.SearchParametersIVF(nprobe=probes, sel=allowed)
        params = faiss.IndexRefineSearchParameters(k_factor=k_factor, base_index_params=base)
    else:
        params = faiss.SearchParameters(sel=allowed)
    scores, positions = inner.search(queries, k, params=params)
    if inner is index:
        return scores, positions
    labels = faiss.vector_to_array(index.id_map)
    return scores, np.where(positions >= 0, labels[np.maximum(positions, 0)], -1)


def empty_like(index: faiss.Index) -> faiss.Index:
    """A trained but empty copy: adding a changed gallery to it needs no new training."""
    copy = faiss.clone_index(index)
    copy.reset()
    return copy


def save_index(index: faiss.Index, path: Path) -> None:
    faiss.write_index(index, str(path))


def read_index(path: Path) -> faiss.Index:
    return faiss.read_index(str(path))


def read_for_search(path: Path, plan: IndexPlan) -> faiss.Index:
    """Read an index with its search settings (IVF probes), on the CPU."""
    index = read_index(path)
    set_probes(index, plan)
    return index


def on_search_device(index: faiss.Index, plan: IndexPlan) -> faiss.Index:
    """`index` copied to the GPUs when this FAISS build sees any and the plan suits them,
    else `index` itself (logged either way)."""
    gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    if gpus > 0 and plan.kind == IVF:
        log.info("FAISS: the two-stage IVF (fast scan + refinement) searches on CPU; %d GPU(s) left unused", gpus)
    elif gpus > 0:
        log.info("FAISS: searching on %d GPU(s); filtered searches on a CPU copy (GPU indexes apply no selectors)", gpus)
        return faiss.index_cpu_to_all_gpus(index)
    log.info("FAISS: searching on CPU (%s build, no GPU visible)", "GPU" if hasattr(faiss, "StandardGpuResources") else "CPU")
    return index
