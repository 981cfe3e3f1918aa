#!/usr/bin/env bash
# The commands the CI example (github-actions.yml) runs: materialize a small region from the
# settings file ($GEOSCOUT_CONFIG or ./geoscout.yaml) on a persistent Dagster instance
# ($DAGSTER_HOME), then show what is there. Run it locally the same way:
#   DAGSTER_HOME=$PWD/.dagster_ci GEOSCOUT_CONFIG=geoscout.yaml docs/examples/ci.sh
# tests/cli/test_cli_end_to_end.py runs this script.
set -euo pipefail
GEOSCOUT="${GEOSCOUT:-geoscout}"
mkdir -p "${DAGSTER_HOME:?set DAGSTER_HOME to a folder the CI caches}"
touch "$DAGSTER_HOME/dagster.yaml"
$GEOSCOUT run grid              # land polygons + grid for settings.region
$GEOSCOUT cells add --grid      # register the land cells at settings.crawl_level
$GEOSCOUT run crawl             # crawl the cells not crawled yet, in batched runs
$GEOSCOUT run dataset           # manifest, splits, hierarchy, shards, dataset_level_<L>
$GEOSCOUT status
