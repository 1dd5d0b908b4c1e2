"""Fitting the cascade's early answers: for each stage before verification, the similarity
and margin thresholds that let it answer as many calibration queries as possible while its
answers stay right.

Fitted on queries identified with every stage run (verified mode), each recording what the
embedding and views stages saw (`Identification.evidence`). A query counts against a stage
when that stage's top match is not the query's artwork, including every query of a work that
is not in the gallery. The views stage is fitted on the queries the embedding stage left.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from whatart.retrieval_service.evaluation.harness import Outcome
from whatart.retrieval_service.identify.calibration import EARLY_STAGES, MAX_EARLY_ERROR, EarlyAnswer

SIMILARITY_QUANTILES = np.linspace(0, 1, 201)
MARGINS = np.round(np.arange(0.0, 0.51, 0.01), 2)


def fit_stage(top: np.ndarray, runner_up: np.ndarray, right: np.ndarray, max_error: float = MAX_EARLY_ERROR) -> EarlyAnswer | None:
    """The thresholds that answer the most queries with (wrong + 1) / (answered + 1) <=
    `max_error` (a bound that needs ~1/max_error right answers before it trusts any), the
    stricter of equals; None when no threshold qualifies."""
    if len(top) == 0:
        return None
    margin = top - runner_up
    similarities = np.unique(np.quantile(top, SIMILARITY_QUANTILES))
    accepted = (top[None, :, None] >= similarities[:, None, None]) & (margin[None, :, None] >= MARGINS[None, None, :])
    answered = accepted.sum(axis=1)
    wrong = (accepted & ~right[None, :, None]).sum(axis=1)
    good = (wrong + 1) / (answered + 1) <= max_error
    if not good.any():
        return None
    coverage = np.where(good, answered, -1)
    best = np.flatnonzero(coverage == coverage.max())[-1]  # the last: highest similarity, then margin
    i, j = np.unravel_index(best, coverage.shape)
    precision = 1 - wrong[i, j] / answered[i, j]
    return EarlyAnswer(round(float(similarities[i]), 4), float(MARGINS[j]), round(float(precision), 4))


def fit_early_answers(outcomes: Sequence[Outcome]) -> tuple[dict[str, EarlyAnswer], dict[str, dict]]:
    """The early answers of each stage (a stage that cannot qualify is left out: it never
    answers early) and, per stage, what they would have decided on these queries."""
    remaining = [o for o in outcomes if all(stage in o.answer.evidence for stage in EARLY_STAGES)]
    fitted: dict[str, EarlyAnswer] = {}
    report: dict[str, dict] = {}
    for stage in EARLY_STAGES:
        seen = [o.answer.evidence[stage] for o in remaining]
        top = np.array([e.top for e in seen])
        runner_up = np.array([e.runner_up for e in seen])
        right = np.array([o.query.in_gallery and e.top_id == o.query.artwork.id for o, e in zip(remaining, seen, strict=True)])
        early = fit_stage(top, runner_up, right)
        if early is None:
            report[stage] = {"queries": len(remaining), "answered": 0}
            continue
        fitted[stage] = early
        taken = np.array([early.certain(e) for e in seen], dtype=bool)
        report[stage] = {"queries": len(remaining), "answered": int(taken.sum()), "wrong": int((taken & ~right).sum()),
                         "min_similarity": early.min_similarity, "min_margin": early.min_margin}
        remaining = [o for o, answered in zip(remaining, taken, strict=True) if not answered]
    return fitted, report
