"""``geoscout status``: the settings in use, the instance, the crawl cells, what each asset
last materialized and the latest runs."""

from __future__ import annotations

from datetime import UTC, datetime

from pipeline.commands.runs import Session, cell_status


def print_status(session: Session, path) -> None:
    settings = session.settings
    print(f"settings file   {path or '(none: GEOSCOUT_DEPLOYMENT defaults)'}")
    print(f"data root       {settings.data_root}")
    print(f"dagster home    {session.instance.root_directory}")
    print(f"region          {settings.region} (crawl level {settings.crawl_level}, "
          f"sources {', '.join(settings.sources)})")
    print(f"levels          {list(session.defs.resources['dataset'].levels)}")
    cells = cell_status(session)
    print(f"crawl cells     {len(cells)} registered, {sum(d for _, d in cells)} crawled")
    print("assets (latest materialization)")
    graph = session.defs.resolve_asset_graph()
    for key in sorted(graph.materializable_asset_keys, key=lambda k: k.to_user_string()):
        if graph.get(key).partitions_def is not None:
            n = len(session.instance.get_materialized_partitions(key))
            print(f"  {key.to_user_string():22s} {n} partitions")
            continue
        event = session.instance.get_latest_materialization_event(key)
        when = ("never" if event is None else
                datetime.fromtimestamp(event.timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
                + f"  run {event.run_id[:8]}")
        print(f"  {key.to_user_string():22s} {when}")
    runs = session.instance.get_runs(limit=5)
    print("latest runs")
    for run in runs:
        print(f"  {run.run_id[:8]}  {run.job_name:18s} {run.status.value}")
    if not runs:
        print("  (none)")
