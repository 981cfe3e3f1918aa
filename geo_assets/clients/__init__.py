"""Image sources for the per-cell pipeline (``geo_assets.ingest.ingest_cell``).

- ``http``: pooled sessions, timeouts, retries with backoff and jitter honouring Retry-After,
  a thread-safe rate limiter, and the error types (transient / quota / credential).
- ``redact``: the one place secrets are scrubbed from URLs, messages and log records.
- ``mapillary``: Graph API v4 client and ``MapillarySource`` (coverage tiles, spread bbox
  sampling, thumbnails); ``vector_tiles``: the MVT decoder it uses.
- ``streetview``: Static API client (metadata, signed images) and ``StreetViewSource``.
- ``local_folder``: ``LocalFolderSource`` (EXIF GPS or a CSV/Parquet sidecar).
- ``base``: ``Candidate``, ``ListRequest`` and the ``ImageSource`` protocol.

Their settings are in ``geo_assets.settings``. Typical use::

    client = MapillaryClient(token, graph_url=..., tiles_url=...)
    result = ingest_cell(MapillarySource(client), "0312", root, IngestSettings())
"""
