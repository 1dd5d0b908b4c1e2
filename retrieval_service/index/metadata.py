"""Artwork metadata in SQLite, keyed by the integer row id that the vector index stores.

Searchable: full-text (FTS5) over artist and title, exact filters on artist, style and
genre (indexed), and a year range on the first year written in the free-text date.
"""

from __future__ import annotations

import re
import sqlite3
import unicodedata
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from whatart.retrieval_service.errors import WhatartError


@dataclass(frozen=True)
class Artwork:
    id: str
    artist: str = ""
    title: str = ""
    genre: str = ""
    style: str = ""
    date: str = ""
    image_path: str = ""
    """Absolute path of the gallery image; served by /v1/artworks/{id}/image, never exposed."""
    source: str = ""

    def public(self) -> dict[str, str]:
        """The fields a client sees (no filesystem paths)."""
        data = asdict(self)
        del data["image_path"]
        return data


COLUMNS = tuple(f.name for f in fields(Artwork))
FILTER_FIELDS = ("artist", "genre", "style")
"""The fields an identification can be restricted to (indexed here, scalar fields in Milvus)."""


MAX_FILTER_CHARS = 1000
UNPRINTABLE = ("Cc", "Cs")
"""Unicode categories refused in filters: C0, DEL and C1 controls, and lone surrogates."""


class FilterError(WhatartError, ValueError):
    """A filter value that cannot be used; the message names the field."""


@dataclass(frozen=True)
class MetadataFilter:
    """Search only among artworks whose every given field equals its value exactly."""

    artist: str | None = None
    genre: str | None = None
    style: str | None = None

    @classmethod
    def of(cls, **fields: str | None) -> MetadataFilter | None:
        """The validated filter of the fields given (None values are not given); None when
        none is, so that unfiltered requests look alike wherever they come from (and are
        searched together: search_batcher.py)."""
        where = cls(**fields)
        return where.validated() if where.conditions() else None

    def validated(self) -> MetadataFilter:
        """This filter, or FilterError naming the first unusable value (values reach SQL as
        parameters and Milvus as escaped literals; control characters have no place in either)."""
        for name, value in self.conditions().items():
            if not value.strip():
                raise FilterError(f"the {name} filter is empty: leave it out to search every {name}")
            if len(value) > MAX_FILTER_CHARS:
                raise FilterError(f"the {name} filter is {len(value):,} characters; at most {MAX_FILTER_CHARS:,} are accepted")
            if any(unicodedata.category(char) in UNPRINTABLE for char in value):
                raise FilterError(f"the {name} filter contains control characters (or lone surrogates)")
        return self

    def conditions(self) -> dict[str, str]:
        """field -> required value, for the fields given."""
        return {name: value for name in FILTER_FIELDS if (value := getattr(self, name)) is not None}

    def matches(self, artwork: Artwork) -> bool:
        return all(getattr(artwork, name) == value for name, value in self.conditions().items())

SCHEMA = f"""
CREATE TABLE artworks (
    row_id INTEGER PRIMARY KEY,
    {', '.join(f'{name} TEXT NOT NULL' for name in COLUMNS)},
    year INTEGER,
    UNIQUE (id)
);
CREATE INDEX artworks_artist ON artworks (artist);
CREATE INDEX artworks_style ON artworks (style);
CREATE INDEX artworks_genre ON artworks (genre);
CREATE INDEX artworks_year ON artworks (year);
CREATE VIRTUAL TABLE artworks_text USING fts5 (artist, title, content='artworks', content_rowid='row_id');
"""

YEAR = re.compile(r"(?<!\d)(\d{3,4})(?!\d)")
WORD = re.compile(r"\w+")
MAX_RESULTS = 100


def year_of(date: str) -> int | None:
    """The first 3- or 4-digit number of a free-text date ("c. 1865-1870" -> 1865)."""
    found = YEAR.search(date)
    return int(found.group(1)) if found else None


@dataclass(frozen=True)
class ArtworkQuery:
    """A metadata search: every given criterion must hold."""

    text: str = ""
    """words that must all start a word of the artist or title (case- and accent-insensitive)"""
    artist: str | None = None
    style: str | None = None
    genre: str | None = None
    year_from: int | None = None
    year_to: int | None = None
    limit: int = 20
    offset: int = 0


def write_metadata(path: Path, artworks: Iterable[Artwork]) -> int:
    """Create a new SQLite file; row_id i is the i-th artwork (the vector index's id)."""
    connection = sqlite3.connect(path)
    try:
        with connection:
            connection.executescript(SCHEMA)
            connection.executemany(
                f"INSERT INTO artworks (row_id, {', '.join(COLUMNS)}, year) VALUES (?{', ?' * len(COLUMNS)}, ?)",
                ((row_id, *(getattr(a, c) for c in COLUMNS), year_of(a.date)) for row_id, a in enumerate(artworks)),
            )
            connection.execute("INSERT INTO artworks_text (artworks_text) VALUES ('rebuild')")
        return connection.execute("SELECT COUNT(*) FROM artworks").fetchone()[0]
    finally:
        connection.close()


class MetadataStore:
    """Read-only access, safe to share between the service's threads."""

    def __init__(self, path: Path) -> None:
        self._connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)

    def count(self) -> int:
        return self._connection.execute("SELECT COUNT(*) FROM artworks").fetchone()[0]

    def by_row_ids(self, row_ids: Iterable[int]) -> dict[int, Artwork]:
        wanted = [int(r) for r in row_ids]
        if not wanted:
            return {}
        rows = self._connection.execute(
            f"SELECT row_id, {', '.join(COLUMNS)} FROM artworks WHERE row_id IN ({', '.join('?' * len(wanted))})",
            wanted,
        ).fetchall()
        return {row[0]: Artwork(*row[1:]) for row in rows}

    def row_ids_matching(self, where: MetadataFilter) -> list[int]:
        """Row ids of the artworks that pass `where`, ascending."""
        conditions = where.conditions()
        clause = " AND ".join(f"{name} = ?" for name in conditions) or "1"
        rows = self._connection.execute(f"SELECT row_id FROM artworks WHERE {clause} ORDER BY row_id", list(conditions.values()))
        return [row[0] for row in rows]

    def in_row_order(self) -> list[Artwork]:
        """Every artwork; item i has row id i."""
        rows = self._connection.execute(f"SELECT {', '.join(COLUMNS)} FROM artworks ORDER BY row_id").fetchall()
        return [Artwork(*row) for row in rows]

    def by_id(self, artwork_id: str) -> Artwork | None:
        row = self._connection.execute(
            f"SELECT {', '.join(COLUMNS)} FROM artworks WHERE id = ?", (artwork_id,)
        ).fetchone()
        return Artwork(*row) if row else None

    def row_id_of(self, artwork_id: str) -> int | None:
        """The row id (the vector index's id) of an artwork."""
        row = self._connection.execute("SELECT row_id FROM artworks WHERE id = ?", (artwork_id,)).fetchone()
        return row[0] if row else None

    def search(self, query: ArtworkQuery) -> tuple[int, list[Artwork]]:
        """(how many artworks match, the page `query.limit` / `query.offset` of them),
        in gallery order."""
        conditions, parameters = [], []
        words = WORD.findall(query.text)
        if words:
            # each word quoted as a prefix term: user text never reaches FTS5's query syntax
            conditions.append("row_id IN (SELECT rowid FROM artworks_text WHERE artworks_text MATCH ?)")
            parameters.append(" ".join(f'"{word}"*' for word in words))
        for column in ("artist", "style", "genre"):
            value = getattr(query, column)
            if value is not None:
                conditions.append(f"{column} = ?")
                parameters.append(value)
        if query.year_from is not None:
            conditions.append("year >= ?")
            parameters.append(query.year_from)
        if query.year_to is not None:
            conditions.append("year <= ?")
            parameters.append(query.year_to)
        where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
        total = self._connection.execute(f"SELECT COUNT(*) FROM artworks {where}", parameters).fetchone()[0]
        rows = self._connection.execute(
            f"SELECT {', '.join(COLUMNS)} FROM artworks {where} ORDER BY row_id LIMIT ? OFFSET ?",
            [*parameters, query.limit, query.offset],
        ).fetchall()
        return total, [Artwork(*row) for row in rows]

    def close(self) -> None:
        self._connection.close()
