"""Group names, pool names and tags, defined once and reused in selections."""

GRID = "grid"
INGEST = "ingest"
DATASET = "dataset"
TRAIN = "train"
EVAL = "eval"

MAPILLARY_POOL = "mapillary_api"
STREETVIEW_POOL = "streetview_api"
GPU_TAG = {"gpu": "1"}
