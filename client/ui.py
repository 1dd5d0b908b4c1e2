"""`whatart ui`: the Gradio demo page, a thin client of the REST service.

It talks to the service over HTTP like any other client, fetches the match images through
the service too (so it works behind a share link where the service is not reachable).
"""

from __future__ import annotations

import io
import logging
import os
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home from a self-hosted demo

import gradio as gr  # noqa: E402
from PIL import Image  # noqa: E402
from whatart.client.rest_client import ServiceError, WhatartClient  # noqa: E402
from whatart.retrieval_service.settings import Settings  # noqa: E402

log = logging.getLogger(__name__)

UNKNOWN = "—"


NOT_IN_GALLERY = "Not in the gallery — closest works:"
NO_HEADS = ("Style and genre of the photo: not predicted — this server has no style/genre heads "
            "(`whatart train-head`, then `whatart export --head FILE`).")


def _describe_top(result: dict) -> str:
    match = result["matches"][0]
    card = (
        f"### {match['title'] or 'Untitled'}\n"
        f"**{match['artist'] or 'Unknown artist'}** · {match['date'] or 'undated'}\n\n"
        f"Genre: {match['genre'] or UNKNOWN} · Style / department: {match['style'] or UNKNOWN}\n\n"
        f"Confidence **{result['confidence']:.0%}** · similarity {match['score']:.3f} · "
        f"{_evidence(result, match)} · id `{match['id']}` · {result['took_ms']:.0f} ms"
    )
    guesses = " · ".join(
        f"{task}: {ranked[0]['label']} ({ranked[0]['probability']:.0%})"
        for task, ranked in result.get("predictions", {}).items() if ranked
    )
    card += f"\n\nThe photo looks like — {guesses}" if guesses else f"\n\n{NO_HEADS}"
    return card if result["in_gallery"] else f"**{NOT_IN_GALLERY}**\n\n{card}"


def _evidence(result: dict, match: dict) -> str:
    """What settled the answer: the embedding alone, with the photo's crops, or matching points."""
    if result.get("decided_by") == "embedding":
        return "recognised from its embedding"
    if result.get("decided_by") == "views":
        return "recognised from the photo and its centre crops"
    return f"{match['inliers'] or 0} matching points"


def _caption(rank: int, match: dict) -> str:
    return f"{rank}. {match['title'] or 'Untitled'} — {match['artist'] or 'Unknown'} ({match['score']:.3f})"


def build_ui(client: WhatartClient, default_k: int, max_k: int) -> gr.Blocks:
    def fetch_image(match: dict) -> Image.Image | None:
        try:
            return Image.open(io.BytesIO(client.artwork_image(match["image_url"])))
        except (ServiceError, OSError) as error:
            log.warning("no image for %s: %s", match["id"], error)
            return None

    def identify(photo: str | None, k: float):
        if not photo:
            return None, "", [], "Upload, paste or take a photo of an artwork first."
        try:
            result = client.identify_file(Path(photo), int(k))
        except ServiceError as error:
            return None, "", [], f"**Could not identify this image.** {error}"
        matches = result["matches"]
        if not matches:
            return None, "", [], "The gallery is empty."
        top, rest = matches[0], matches[1:]
        others = [(fetch_image(m), _caption(rank, m)) for rank, m in enumerate(rest, start=2)]
        status = f"{len(matches)} matches from model {result['model']} in {result['took_ms']:.0f} ms."
        return fetch_image(top), _describe_top(result), [o for o in others if o[0]], status

    with gr.Blocks(title="whatart") as ui:
        gr.Markdown("# whatart\nPhotograph or upload a painting: whatart finds it in the gallery.")
        with gr.Row():
            with gr.Column():
                photo = gr.Image(type="filepath", sources=["upload", "webcam", "clipboard"], label="Your photo")
                k = gr.Slider(1, max_k, value=default_k, step=1, label="Matches to show")
                button = gr.Button("Identify", variant="primary", elem_id="identify")
            with gr.Column():
                top_image = gr.Image(label="Best match", interactive=False, elem_id="top-image")
                top_card = gr.Markdown(elem_id="top-match")
        status = gr.Markdown(elem_id="status")
        others = gr.Gallery(label="Other matches", columns=5, height="auto", elem_id="other-matches")
        outputs = [top_image, top_card, others, status]
        button.click(identify, [photo, k], outputs)
        photo.upload(identify, [photo, k], outputs)
    return ui


def launch(settings: Settings, share: bool = False) -> None:
    client = WhatartClient(settings.server_url, token=settings.api_token)
    ui = build_ui(client, settings.default_k, min(settings.max_k, 20))
    ui.queue(default_concurrency_limit=8)
    ui.launch(
        server_name=settings.ui_host, server_port=settings.ui_port, share=share,
        prevent_thread_lock=True, show_error=True, quiet=True,
    )
    log.info("UI on http://%s:%d (service %s)", settings.ui_host, settings.ui_port, settings.server_url)
    if share:
        if ui.share_url:
            log.info("public share link: %s", ui.share_url)
        else:
            log.warning("no public share link could be made (Gradio's share server is unreachable from here); "
                        "the UI is only on http://%s:%d", settings.ui_host, settings.ui_port)
    ui.block_thread()
