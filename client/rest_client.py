"""A small synchronous client of the whatart REST API."""

from __future__ import annotations

from pathlib import Path

import httpx
from whatart.retrieval_service.errors import WhatartError
from whatart.retrieval_service.index.metadata import MetadataFilter
from whatart.retrieval_service.serving.access import bearer


class ServiceError(WhatartError):
    """The service answered with an error (or not at all); carries the HTTP status."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class WhatartClient:
    def __init__(self, server_url: str, timeout_s: float = 60.0, token: str = "") -> None:
        self.server_url = server_url.rstrip("/")
        self._http = httpx.Client(base_url=self.server_url, timeout=timeout_s, headers=bearer(token))

    def identify(self, image: bytes, k: int | None = None, filename: str = "image", where: MetadataFilter | None = None,
                 explain: bool = False) -> dict:
        """The answer among the artworks `where` keeps (all when None); `explain`: with each
        painting's kept correspondences."""
        data = {**({"k": str(k)} if k is not None else {}), **(where.conditions() if where else {}),
                **({"explain": "true"} if explain else {})}
        return self._json(self._request("POST", "/v1/identify", files={"image": (filename, image)}, data=data))

    def identify_file(self, path: Path, k: int | None = None, where: MetadataFilter | None = None, explain: bool = False) -> dict:
        try:
            image = path.read_bytes()
        except OSError as error:
            raise ServiceError(f"cannot read {path}: {error.strerror}") from None
        return self.identify(image, k, filename=path.name, where=where, explain=explain)

    def artwork_image(self, artwork_id_or_url: str) -> bytes:
        """Image bytes, given an artwork's `image_url` from a match."""
        return self._request("GET", artwork_id_or_url).content

    def health(self) -> dict:
        return self._json(self._request("GET", "/health"))

    def _request(self, method: str, path: str, **kwargs: object) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as error:
            raise ServiceError(f"cannot reach the whatart service at {self.server_url}: {error}") from None
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail", response.text)
            except ValueError:
                detail = response.text
            raise ServiceError(f"HTTP {response.status_code}: {detail}", response.status_code)
        return response

    @staticmethod
    def _json(response: httpx.Response) -> dict:
        return response.json()

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> WhatartClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
