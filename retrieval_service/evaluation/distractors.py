"""Synthetic gallery vectors that follow the distribution of real embeddings.

Uniform noise on the sphere would be far from every real painting (an index looks perfect)
and isotropic Gaussian noise ignores that embeddings crowd along a few hundred directions.
Instead the real embeddings are clustered (k-means, as artworks group by style and
palette) and each cluster is modelled as a Gaussian with its own per-component variances
in the real data's PCA basis; a distractor is drawn from one cluster (chosen with the
cluster's weight), then normalised like a real embedding. `fidelity` measures how close
the imitation is: the similarity of each sample to its nearest real embedding, for real
held-out vectors and for distractors.

When the benchmark asks for more dimensions than the encoder has, vectors are carried into
the larger space by a fixed random orthonormal map, which keeps every inner product.
"""

from __future__ import annotations

from dataclasses import dataclass

import faiss
import numpy as np


@dataclass(frozen=True)
class EmbeddingModel:
    mean: np.ndarray  # [dim]
    basis: np.ndarray  # [components, dim], rows orthonormal
    centres: np.ndarray  # [clusters, components], in PCA coordinates
    spreads: np.ndarray  # [clusters, components], standard deviations
    weights: np.ndarray  # [clusters], sums to 1

    @classmethod
    def fit(cls, vectors: np.ndarray, clusters: int = 64, seed: int = 0) -> EmbeddingModel:
        vectors = np.asarray(vectors, dtype=np.float32)
        clusters = min(clusters, max(1, len(vectors) // 20))  # at least ~20 works per cluster
        mean = vectors.mean(axis=0)
        _, _, components = np.linalg.svd(vectors - mean, full_matrices=False)
        coordinates = (vectors - mean) @ components.T
        kmeans = faiss.Kmeans(coordinates.shape[1], clusters, niter=20, seed=seed, spherical=False)
        kmeans.train(np.ascontiguousarray(coordinates))
        _, assignment = kmeans.index.search(np.ascontiguousarray(coordinates), 1)
        assignment = assignment.ravel()
        centres = np.stack([coordinates[assignment == c].mean(axis=0) if (assignment == c).any() else kmeans.centroids[c]
                            for c in range(clusters)])
        spreads = np.stack([coordinates[assignment == c].std(axis=0) if (assignment == c).sum() > 1 else coordinates.std(axis=0)
                            for c in range(clusters)])
        weights = np.bincount(assignment, minlength=clusters).astype(np.float64)
        return cls(mean, components.astype(np.float32), centres.astype(np.float32), spreads.astype(np.float32), weights / weights.sum())

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """n unit vectors [n, dim] drawn from the fitted mixture."""
        cluster = rng.choice(len(self.weights), size=n, p=self.weights)
        coordinates = self.centres[cluster] + self.spreads[cluster] * rng.standard_normal((n, self.basis.shape[0]), dtype=np.float32)
        vectors = self.mean + coordinates @ self.basis
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def lift(vectors: np.ndarray, dim: int, seed: int = 0) -> np.ndarray:
    """`vectors` carried into `dim` dimensions by a fixed random orthonormal map (inner
    products unchanged); `dim` below the vectors' own is refused, as it would lose information."""
    own = vectors.shape[1]
    if dim < own:
        raise ValueError(f"cannot lift {own}-d embeddings to {dim} dimensions: ask for at least {own}")
    if dim == own:
        return np.asarray(vectors, dtype=np.float32)
    return np.asarray(vectors, dtype=np.float32) @ lifting_map(own, dim, seed)


def lifting_map(own: int, dim: int, seed: int = 0) -> np.ndarray:
    """[own, dim] with orthonormal rows, the same for the same arguments."""
    gaussian = np.random.default_rng(seed).standard_normal((dim, own))
    q, _ = np.linalg.qr(gaussian)
    return q.T.astype(np.float32)


def fidelity(model: EmbeddingModel, real: np.ndarray, held_out: int = 500, seed: int = 0) -> dict[str, float]:
    """Median similarity to the nearest real embedding: for real vectors left out of the
    reference set, and for as many distractors. Close medians = distractors crowd real
    paintings about as densely as real paintings crowd each other."""
    rng = np.random.default_rng(seed)
    held_out = min(held_out, len(real) // 2)  # a small gallery keeps half as the reference
    order = rng.permutation(len(real))
    probe, reference = real[order[:held_out]], real[order[held_out:]]
    index = faiss.IndexFlatIP(real.shape[1])
    index.add(np.ascontiguousarray(reference, dtype=np.float32))
    nearest_real, _ = index.search(np.ascontiguousarray(probe, dtype=np.float32), 1)
    nearest_fake, _ = index.search(np.ascontiguousarray(model.sample(held_out, rng), dtype=np.float32), 1)
    return {"real_to_nearest_real_median": round(float(np.median(nearest_real)), 4),
            "distractor_to_nearest_real_median": round(float(np.median(nearest_fake)), 4)}
