"""Group names, pool names and tags, defined once and reused in selections."""

GRID = "grid"
INGEST = "ingest"
DATASET = "dataset"
TRAIN = "train"
EVAL = "eval"
TUNE = "tune"  # hyper-parameter studies: not in the training job (each study trains many models)

MAPILLARY_POOL = "mapillary_api"
STREETVIEW_POOL = "streetview_api"
GPU_TAG = {"gpu": "1"}

# Crawl cells per ingestion run (BackfillPolicy.multi_run and the sensor's batches): a run
# costs seconds of start-up, so each one takes a batch of cells.
CELLS_PER_RUN = 16

# A crawl run tagged FORCE_TAG="true" re-crawls its cells, keeping the images stored before
# (the sensor tags stale cells' runs so; users can tag a backfill so).
FORCE_TAG = "geoscout/force"
