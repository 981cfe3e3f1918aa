"""Schedules: refresh the grid (new cells then flow in through the crawl-cells sensor) and,
optionally, train. Both start stopped: turn them on in the UI or with `dagster schedule start`.
"""

from __future__ import annotations

import dagster as dg


def make_grid_refresh_schedule(job) -> dg.ScheduleDefinition:
    """Weekly: rebuild the grid for the configured region and crawl level, so that a grown
    region or a deeper level shows up as new cells for the crawl-cells sensor."""
    return dg.ScheduleDefinition(
        name="grid_refresh_schedule", job=job, cron_schedule="0 2 * * 1",
        execution_timezone="UTC", default_status=dg.DefaultScheduleStatus.STOPPED,
        description="Rebuild the grid weekly; the crawl-cells sensor registers new cells.")


def make_training_schedule(job) -> dg.ScheduleDefinition:
    """Optional: train and evaluate on Sundays. Off by default: training never starts by
    itself unless an operator turns this on."""
    return dg.ScheduleDefinition(
        name="training_schedule", job=job, cron_schedule="0 4 * * 0",
        execution_timezone="UTC", default_status=dg.DefaultScheduleStatus.STOPPED,
        description="Optional weekly training; stopped unless turned on.")
