"""`whatart ui`: the Gradio demo page, a thin client of the REST service.

Each painting the service finds in the photo is outlined and numbered on it (ui_drawing.py),
and gets a card: its best match, and the photo beside the gallery image, the matching points
verification kept joined by lines. One API endpoint, /identify, whether the upload or the
button starts it. It talks to the service over HTTP like any other client, fetches the match
images through the service too (so it works behind a share link where the service is not reachable).
Gradio keeps uploads and the images it serves under GRADIO_TEMP_DIR (default /tmp/gradio):
a photo is deleted as soon as it has been read for the service, the rest by CACHE_CLEANUP.
"""

from __future__ import annotations

import io
import logging
import os
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home from a self-hosted demo

import gradio as gr  # noqa: E402
from gradio.data_classes import ImageData  # noqa: E402
from PIL import Image  # noqa: E402
from pillow_heif import register_heif_opener  # noqa: E402
from whatart.client.rest_client import ServiceError, WhatartClient  # noqa: E402
from whatart.client.ui_drawing import annotate, open_photo, side_by_side  # noqa: E402
from whatart.retrieval_service.settings import Settings  # noqa: E402

register_heif_opener()  # gr.Image opens each upload with PIL, phones' HEIC photos too
log = logging.getLogger(__name__)

UNKNOWN = "—"
NOT_AN_IMAGE = "This file is not an image whatart can read: send a JPEG, PNG, WebP, GIF, TIFF, BMP or HEIC photo."
PHOTO_GONE = "This photo is no longer on the server (whatart deletes each one once it has read it): upload it again."
NO_SERVICE = "The whatart service is not answering: upload the photo again in a moment."
CACHE_CLEANUP = (600, 600)
"""Gradio's delete_cache (frequency, age in seconds): every 10 min, its temp files older than
10 min go (the match images it served, photos never identified); all of them at shutdown."""


NOT_IN_GALLERY = "Not in the gallery"
NO_HEADS = ("Style and genre of the photo: not predicted — this server has no style/genre heads "
            "(`whatart train-head`, then `whatart export --head FILE`).")
MAX_PAINTINGS = 4
"""painting cards on the page: as many as the service finds in one photo at most"""


def _describe_top(painting: dict, number: int = 1) -> str:
    """The card of painting `number`: its best match, how sure, and what decided it."""
    match = painting["matches"][0]
    title = match["title"] or "Untitled"
    drawn = len((painting.get("explanation") or {}).get("pairs") or [])  # what the side-by-side picture joins
    joined = f"\n\nBeside it: lines join the points of photo and gallery image that match ({drawn} kept)." if drawn else ""
    heading = f"### {number}. {title}" if painting["in_gallery"] else f"### {number}. {NOT_IN_GALLERY}\n\nClosest work: **{title}**"
    return (
        f"{heading}\n\n**{match['artist'] or 'Unknown artist'}** · {match['date'] or 'undated'}\n\n"
        f"Genre: {match['genre'] or UNKNOWN} · Style / department: {match['style'] or UNKNOWN}\n\n"
        f"Confidence **{painting['confidence']:.0%}** · similarity {match['score']:.3f} · "
        f"{_evidence(painting, match)} · id `{match['id']}`{joined}"
    )


def _heads(result: dict) -> str:
    guesses = " · ".join(
        f"{task}: {ranked[0]['label']} ({ranked[0]['probability']:.0%})"
        for task, ranked in result.get("predictions", {}).items() if ranked
    )
    return f"The photo looks like — {guesses}" if guesses else NO_HEADS


def _evidence(result: dict, match: dict) -> str:
    """What settled the answer: the embedding alone, with the photo's crops, or matching points."""
    if result.get("decided_by") == "embedding":
        return "recognised from its embedding"
    if result.get("decided_by") == "views":
        return "recognised from the photo and its centre crops"
    return f"{match['inliers'] or 0} matching points"


def photo_input(**options: object) -> gr.Image:
    """gr.Image whose unreadable uploads get one plain message instead of PIL's error, which
    names the server's temp path. Its `preprocess` is wrapped on the instance: a subclass of a
    Gradio component makes Gradio write a .pyi stub next to this module at import."""
    photo = gr.Image(**options)
    preprocess = photo.preprocess

    def friendly(payload: ImageData | None) -> str | None:
        try:
            return preprocess(payload)
        except FileNotFoundError:
            raise gr.Error(PHOTO_GONE) from None
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
            if payload and payload.path:
                Path(payload.path).unlink(missing_ok=True)  # nothing to retry with
            raise gr.Error(NOT_AN_IMAGE) from None

    photo.preprocess = friendly  # type: ignore[method-assign]
    return photo


def _megabytes(size: int) -> str:
    return f"{size / 2**20:.3g} MB"


def _caption(number: int, rank: int, match: dict) -> str:
    return f"{number}·{rank}. {match['title'] or 'Untitled'} — {match['artist'] or 'Unknown'} ({match['score']:.3f})"


def _paintings(result: dict) -> list[dict]:
    """Every painting of the answer, largest first (a service without `paintings`: the photo)."""
    whole = {key: result.get(key) for key in ("matches", "in_gallery", "confidence", "decided_by")}
    return (result.get("paintings") or [{**whole, "region": None, "explanation": None}])[:MAX_PAINTINGS]


def _read_photo(data: bytes) -> Image.Image | None:
    try:
        return open_photo(data)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        log.warning("cannot draw on the photo: %s", error)
        return None


def build_ui(client: WhatartClient, default_k: int, max_k: int, max_upload_bytes: int,
             cache_cleanup: tuple[int, int] = CACHE_CLEANUP) -> gr.Blocks:
    def fetch_image(match: dict) -> Image.Image | None:
        try:
            return Image.open(io.BytesIO(client.artwork_image(match["image_url"])))
        except (ServiceError, OSError) as error:
            log.warning("no image for %s: %s", match["id"], error)
            return None

    def answer(status: str, annotated: Image.Image | None = None, cards: list | None = None, others: list | None = None):
        """The outputs: the annotated photo, the status, (box, card, evidence) per slot, the other matches."""
        cards = cards or []
        slots = [(gr.Column(visible=i < len(cards)), *(cards[i] if i < len(cards) else ("", None)))
                 for i in range(MAX_PAINTINGS)]
        return annotated, status, *[value for slot in slots for value in slot], others or []

    def identify(photo: str | None, k: float):
        if not photo:
            return answer("Upload, paste or take a photo of an artwork first.")
        path = Path(photo)
        try:
            image = path.read_bytes()
            path.unlink()  # the photo is the visitor's: it leaves the server once read
        except FileNotFoundError:  # the same file, uploaded and identified at once elsewhere
            raise gr.Error(PHOTO_GONE) from None
        try:
            result = client.identify(image, int(k), filename=path.name, explain=True)
        except ServiceError as error:
            if error.status is None:
                log.warning("%s", error)
                return answer(f"**Could not identify this image.** {NO_SERVICE}")
            return answer(f"**Could not identify this image.** {error}")
        if not result["matches"]:
            return answer("The gallery is empty.")
        paintings, upright = _paintings(result), _read_photo(image)
        images: dict[str, Image.Image | None] = {}

        def picture(match: dict) -> Image.Image | None:
            if match["id"] not in images:
                images[match["id"]] = fetch_image(match)
            return images[match["id"]]

        cards, others = [], []
        for number, painting in enumerate(paintings, start=1):
            top = painting["matches"][0]
            if painting["region"] is None and upright is not None:
                painting["region"] = [[0, 0], [upright.width, 0], [upright.width, upright.height], [0, upright.height]]
            evidence = side_by_side(upright, painting, picture(top), number) if upright is not None else None
            cards.append((_describe_top(painting, number), evidence))
            others += [(picture(m), _caption(number, rank, m)) for rank, m in enumerate(painting["matches"][1:], start=2)]
        annotated = annotate(upright, [p["region"] for p in paintings]) if upright is not None else None
        found = f"{len(paintings)} painting{'s' if len(paintings) > 1 else ''} found"
        status = (f"{found}; {len(result['matches'])} matches from model {result['model']} in {result['took_ms']:.0f} ms."
                  f"\n\n{_heads(result)}")
        return answer(status, annotated, cards, [o for o in others if o[0]])

    limit = _megabytes(max_upload_bytes)
    with gr.Blocks(title="whatart", delete_cache=cache_cleanup) as ui:
        gr.Markdown(f"# whatart\nPhotograph or upload paintings (a photo up to {limit}): whatart finds each one in the "
                    "gallery, and shows why. Your photo is deleted from this server as soon as it has been sent for "
                    "identification.")
        with gr.Row():
            with gr.Column():
                # image_mode=None: the upload is passed on as it is, never copied in another mode
                photo = photo_input(type="filepath", image_mode=None, sources=["upload", "webcam", "clipboard"],
                                   label=f"Your photo (up to {limit})", elem_id="photo")
                k = gr.Slider(1, max_k, value=default_k, step=1, label="Matches to show")
                button = gr.Button("Identify", variant="primary", elem_id="identify")
            with gr.Column():
                annotated = gr.Image(label="Paintings found, numbered", show_label=False, interactive=False,
                                     format="png", elem_id="paintings-found")  # no label over painting 1's number
        status = gr.Markdown(label="Summary", elem_id="status")
        slots = []
        for number in range(1, MAX_PAINTINGS + 1):
            with gr.Column(visible=False, elem_id=f"painting-{number}", elem_classes="painting") as box, gr.Row():
                card = gr.Markdown(label=f"Painting {number}", elem_id=f"painting-{number}-card", elem_classes="painting-card")
                evidence = gr.Image(label=f"Painting {number}: the photo and its match, matching points joined",
                                    interactive=False, format="png", scale=2, elem_id=f"painting-{number}-evidence",
                                    elem_classes="evidence")
            slots += [box, card, evidence]
        others = gr.Gallery(label="Other matches", columns=5, height="auto", elem_id="other-matches")
        # one function, one API endpoint (/identify), whichever of the two starts it
        gr.on([button.click, photo.upload], identify, [photo, k], [annotated, status, *slots, others], api_name="identify")
    return ui


def launch(settings: Settings, share: bool = False) -> None:
    client = WhatartClient(settings.server_url, token=settings.api_token)
    ui = build_ui(client, settings.default_k, min(settings.max_k, 20), settings.max_upload_bytes)
    ui.queue(default_concurrency_limit=8)
    ui.launch(  # show_error=False: an unexpected exception shows as a bare "Error", never its text
        server_name=settings.ui_host, server_port=settings.ui_port, share=share,
        prevent_thread_lock=True, show_error=False, quiet=True, max_file_size=settings.max_upload_bytes,
    )
    log.info("UI on http://%s:%d (service %s)", settings.ui_host, settings.ui_port, settings.server_url)
    if share:
        if ui.share_url:
            log.info("public share link: %s", ui.share_url)
        else:
            log.warning("no public share link could be made (Gradio's share server is unreachable from here); "
                        "the UI is only on http://%s:%d", settings.ui_host, settings.ui_port)
    ui.block_thread()
