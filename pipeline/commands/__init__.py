"""The ``geoscout`` sub-commands that drive the Dagster instance (init, cells, run, status);
``pipeline/cli.py`` assembles them with the commands that live with their own modules."""
