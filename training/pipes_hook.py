"""The optional Dagster Pipes hook. Only rank 0 opens Pipes: with several processes each
opening it, Dagster would receive several materializations and fail the step."""

from __future__ import annotations

import logging
import os

log = logging.getLogger("geoscout.training")


class Reporter:
    """Logs locally; on rank 0 of a Pipes launch, also forwards logs and the final metadata."""

    def __init__(self, rank: int) -> None:
        self.pipes = None
        self._cm = None
        if rank != 0:
            return
        from dagster_pipes import DAGSTER_PIPES_CONTEXT_ENV_VAR, open_dagster_pipes

        if os.environ.get(DAGSTER_PIPES_CONTEXT_ENV_VAR):
            self._cm = open_dagster_pipes()
            self.pipes = self._cm.__enter__()

    def info(self, message: str) -> None:
        # Once: under Pipes, the launcher also shows this process's stderr, so a line logged
        # locally and through Pipes appeared twice in Dagster (raw and wrapped).
        if self.pipes is not None:
            self.pipes.log.info(message)
        else:
            log.info(message)

    def progress_write(self):
        """Where progress lines go: under Pipes, the Dagster run log (the launcher prints to
        the same terminal, so its lines would cut a bar this process redraws); else None (a
        bar on a terminal, lines elsewhere: geo_assets.progress)."""
        return self.pipes.log.info if self.pipes is not None else None

    def materialize(self, metadata: dict, data_version: str | None = None) -> None:
        if self.pipes is not None:
            self.pipes.report_asset_materialization(metadata=metadata, data_version=data_version)

    def close(self, exc: BaseException | None = None) -> None:
        if self._cm is not None:
            etype = type(exc) if exc else None
            self._cm.__exit__(etype, exc, exc.__traceback__ if exc else None)
            self._cm = self.pipes = None
