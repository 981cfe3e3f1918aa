"""What every image source gives the per-cell pipeline: candidates, then bytes.

A source lists :class:`Candidate` images for a crawl cell and fetches each one's bytes. The
handle a candidate needs for fetching (a signed thumbnail URL, a file path) lives only in
memory on the candidate (``fetch_ref``, excluded from ``repr``) and never reaches a manifest.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class Candidate:
    image_id: str                        # "<source>:<source_id>"
    source: str
    source_id: str
    lat_deg: float
    lon_deg: float
    group_id: str | None = None          # sequence / pano / photo group
    creator: str | None = None
    captured_at_ms: int | None = None    # epoch milliseconds, UTC
    heading_deg: float | None = None
    is_pano: bool | None = None
    license: str | None = None
    attribution: str | None = None
    fetch_ref: Any = field(default=None, repr=False, compare=False)
    # set when the source's record failed strict parsing: the row is kept with this reason
    drop_reason: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class ListRequest:
    """What to list for one cell."""

    cell_id: str
    target: int                          # images wanted in the cell (before filtering)
    seed: int = 0
    land: Any = None                     # shapely geometry of the cell's land part, optional


class ImageSource(Protocol):
    name: str                            # a manifest.Source value
    ext: str                             # file extension of stored images

    def preflight(self) -> None:
        """Raise a clear error when the source cannot run (missing credential, terms)."""

    def list_candidates(self, request: ListRequest) -> list[Candidate]:
        """Candidates in the cell; [] means the cell genuinely has no coverage.
        Transient failures raise ``TransientServiceError``."""

    def fetch(self, candidate: Candidate) -> bytes:
        """The image's bytes; raises ``RemoteServiceError`` subclasses on failure."""
