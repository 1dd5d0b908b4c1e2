"""Artwork metadata in SQLite, keyed by the integer row id that the vector index stores."""

from __future__ import annotations

import sqlite3
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from collections.abc import Iterable


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

SCHEMA = f"""
CREATE TABLE artworks (
    row_id INTEGER PRIMARY KEY,
    {', '.join(f'{name} TEXT NOT NULL' for name in COLUMNS)},
    UNIQUE (id)
);
"""


def write_metadata(path: Path, artworks: Iterable[Artwork]) -> int:
    """Create a new SQLite file; row_id i is the i-th artwork (the vector index's id)."""
    connection = sqlite3.connect(path)
    try:
        with connection:
            connection.executescript(SCHEMA)
            connection.executemany(
                f"INSERT INTO artworks (row_id, {', '.join(COLUMNS)}) VALUES (?{', ?' * len(COLUMNS)})",
                ((row_id, *(getattr(a, c) for c in COLUMNS)) for row_id, a in enumerate(artworks)),
            )
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

    def by_id(self, artwork_id: str) -> Artwork | None:
        row = self._connection.execute(
            f"SELECT {', '.join(COLUMNS)} FROM artworks WHERE id = ?", (artwork_id,)
        ).fetchone()
        return Artwork(*row) if row else None

    def row_id_of(self, artwork_id: str) -> int | None:
        """The row id (the vector index's id) of an artwork."""
        row = self._connection.execute("SELECT row_id FROM artworks WHERE id = ?", (artwork_id,)).fetchone()
        return row[0] if row else None

    def close(self) -> None:
        self._connection.close()
