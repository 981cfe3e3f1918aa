"""Assets by stage: grid, ingest, dataset, train, evaluate."""
