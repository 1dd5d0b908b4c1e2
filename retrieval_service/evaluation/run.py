"""`whatart evaluate`: build or reuse the indexes, run the protocols, report, calibrate.

`--calibrate` identifies with every stage run (verified mode), so that each query records
what the cascade's early stages saw, and stores with the index the inlier threshold and
confidence curve (open-set queries) and the early answers (every query run: early_answers.py).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from dataclasses import asdict
from pathlib import Path

from whatart.retrieval_service.evaluation import harness, wall
from whatart.retrieval_service.evaluation.early_answers import fit_early_answers
from whatart.retrieval_service.evaluation.holdout import is_held_out
from whatart.retrieval_service.identify.calibration import Calibration
from whatart.retrieval_service.identify.identifier import Identifier
from whatart.retrieval_service.index.gallery import Gallery
from whatart.retrieval_service.index.metadata import Artwork
from whatart.retrieval_service.ingest.pipeline import current_gallery, ingest
from whatart.retrieval_service.ingest.sources import GallerySource, open_source
from whatart.retrieval_service.settings import Settings
from whatart.retrieval_service.triton.access_key import triton_api_key
from whatart.retrieval_service.triton.encoder import TritonEncoder, resolve_model, served_as

log = logging.getLogger(__name__)

PROTOCOL_NAMES = ("seed", "photo", "open-set", "wall")


async def _ensure_gallery(index_dir: Path, source: GallerySource, encoder: TritonEncoder, settings: Settings) -> Gallery:
    """Reuse the index when ingesting the source again would rebuild the same one."""
    served = await encoder.served_model()
    reusable = current_gallery(index_dir, served.identity, source, settings)
    if reusable is not None:
        log.info("reusing the index at %s", index_dir)
        return reusable
    await ingest(source, index_dir, encoder, settings)
    return Gallery.load(index_dir, settings.milvus_connection())


async def _retrieval(identifier: Identifier, artworks: list[Artwork], protocol: str, n: int, seed: int,
                     concurrency: int) -> list[harness.Outcome]:
    queries = harness.make_queries(protocol, harness.sample(artworks, n, seed), in_gallery=True, seed=seed)
    return await harness.run_queries(identifier, queries, k=5, concurrency=concurrency, label=protocol)


async def _open_set(identifier: Identifier, kept: list[Artwork], held_out: list[Artwork], n: int, seed: int,
                    concurrency: int, calibrate: bool, calibration_outcomes: list[harness.Outcome]) -> tuple[dict, Calibration | None]:
    absent = harness.sample(held_out, n // 2, seed)
    present = harness.sample(kept, len(absent), seed + 1)
    queries = (harness.make_queries("photo", present, in_gallery=True, seed=seed)
               + harness.make_queries("photo", absent, in_gallery=False, seed=seed + 1))
    outcomes = await harness.run_queries(identifier, queries, k=5, concurrency=concurrency, label="open-set")
    current = harness.open_set_report(outcomes, identifier.calibration.min_inliers)
    best = harness.choose_threshold(outcomes)
    report = {"at_current_threshold": asdict(current), "chosen_threshold": asdict(harness.open_set_report(outcomes, best)),
              "calibration_in_use": identifier.calibration.source, "decided_by": harness.decided_by(outcomes),
              "heads": {task: asdict(harness.classification_report(outcomes, task, labels))
                        for task, labels in identifier.served.heads.items()}}
    if not calibrate:
        return report, None
    slope, intercept = harness.fit_confidence(outcomes)
    precision = report["chosen_threshold"]["not_in_gallery_precision"]
    recall = report["chosen_threshold"]["not_in_gallery_recall"]
    everything = calibration_outcomes + outcomes
    early, report["early_answers"] = fit_early_answers(everything)
    calibration = Calibration(best, slope, intercept,
                              f"open-set evaluation, {len(outcomes)} photo queries: precision {precision:.3f}, recall {recall:.3f}; "
                              f"early answers fitted on {len(everything)} queries", early)
    return report, calibration


async def evaluate(settings: Settings, source_spec: str, protocols: list[str], n: int, seed: int, index_dir: Path,
                   model: str | None, concurrency: int, calibrate: bool) -> dict:
    source = open_source(source_spec)
    if calibrate:  # every stage for every query: what the early answers are fitted on
        settings = dataclasses.replace(settings, identify_mode="verified")
    api_key = triton_api_key(settings)
    model = await resolve_model(settings.triton_url, model, api_key)
    encoder = TritonEncoder.from_settings(settings, model)  # embeddings for the galleries
    identifying = TritonEncoder.from_settings(settings, await served_as(settings.triton_url, model, api_key))  # + heads, if served
    measured: dict[str, dict] = {}
    results: dict[str, object] = {
        "gallery": source.name, "artworks": len(source.artworks), "model": model, "query_seed": seed,
        "switches": {"gallery_blurs": settings.gallery_blurs, "query_rotations": settings.query_rotations,
                     "query_crops": settings.query_crops, "rerank_candidates": settings.rerank_candidates,
                     "rerank_extended": settings.rerank_extended, "rerank_min_inliers": settings.rerank_min_inliers,
                     "colour_rerank_below": settings.colour_rerank_below, "identify_mode": settings.identify_mode},
        "protocols": measured,
    }
    try:
        served = await identifying.served_model()
        retrieval = [p for p in protocols if p in harness.RETRIEVAL_PROTOCOLS]
        retrieval_outcomes: list[harness.Outcome] = []
        if retrieval:
            gallery = await _ensure_gallery(index_dir, source, encoder, settings)
            identifier = Identifier(gallery, identifying, served, settings)
            for protocol in retrieval:
                outcomes = await _retrieval(identifier, source.artworks, protocol, n, seed, concurrency)
                measured[protocol] = {**asdict(harness.retrieval_report(outcomes)), "decided_by": harness.decided_by(outcomes),
                                      "phantom_rate": wall.phantom_rate(outcomes)}
                retrieval_outcomes += outcomes
        if "wall" in protocols:
            gallery = await _ensure_gallery(index_dir, source, encoder, settings)
            walls = wall.wall_queries(source.artworks, n, seed)
            measured["wall"] = asdict(await wall.run_walls(Identifier(gallery, identifying, served, settings), walls, concurrency))
        if "open-set" in protocols:
            held_out = [a for a in source.artworks if is_held_out(a.id)]
            kept = [a for a in source.artworks if not is_held_out(a.id)]
            open_dir = index_dir.with_name(index_dir.name + "-openset")
            open_gallery = await _ensure_gallery(open_dir, GallerySource(source.name + " minus hold-out", kept), encoder, settings)
            identifier = Identifier(open_gallery, identifying, served, settings)
            report, calibration = await _open_set(identifier, kept, held_out, n, seed, concurrency, calibrate, retrieval_outcomes)
            measured["open-set"] = report
            if calibration is not None:
                for directory in (open_gallery.directory, (index_dir / "current").resolve()):
                    if directory.exists():
                        log.info("calibration (min_inliers %d) stored in %s", calibration.min_inliers, calibration.save(directory))
                report["calibration"] = asdict(calibration)
    finally:
        await encoder.close()
        await identifying.close()
    return results


def table(results: dict) -> str:
    """The human-readable summary printed beside the JSON."""
    measured = results["protocols"]
    lines = [f"{results['gallery']} ({results['artworks']} works), model {results['model']}, query seed {results['query_seed']}",
             f"{'protocol':<10} {'queries':>7} {'top-1':>7} {'top-5':>7} {'mAP@5':>7} {'p50 ms':>7} {'p95 ms':>7}"]
    for protocol in ("seed", "photo"):
        if protocol in measured:
            r = measured[protocol]
            decided = " ".join(f"{stage} {count}" for stage, count in r["decided_by"].items())
            lines.append(f"{protocol:<10} {r['queries']:>7} {r['top1']:>7.1%} {r['top5']:>7.1%} {r['map5']:>7.3f} "
                         f"{r['latency_p50_ms']:>7.0f} {r['latency_p95_ms']:>7.0f}  decided by: {decided}; "
                         f"phantom paintings on {r['phantom_rate']:.1%}")
    if "wall" in measured:
        w = measured["wall"]
        lines.append(f"wall: {w['photos']} photos, {w['paintings']} paintings: all found on {w['all_found']:.1%}, per painting "
                     f"{w['per_painting_top1']:.1%}, {w['extra_entries']} other entries; p50 / p95 "
                     f"{w['latency_p50_ms']:.0f} / {w['latency_p95_ms']:.0f} ms")
    if "open-set" in measured:
        chosen = measured["open-set"]["chosen_threshold"]
        lines.append(f"open-set: 'not in gallery' precision {chosen['not_in_gallery_precision']:.1%}, recall "
                     f"{chosen['not_in_gallery_recall']:.1%} at min_inliers {chosen['min_inliers']}; "
                     f"in-gallery top-1 {chosen['in_gallery_top1']:.1%}")
        for task, head in measured["open-set"]["heads"].items():
            lines.append(f"{task} of held-out works: top-1 {head['top1']:.1%} over {head['queries']} queries")
    return "\n".join(lines)


def run(settings: Settings, source_spec: str, protocols: list[str], n: int, seed: int, index_dir: Path,
        model: str | None, concurrency: int, calibrate: bool) -> dict:
    return asyncio.run(evaluate(settings, source_spec, protocols, n, seed, index_dir, model, concurrency, calibrate))
