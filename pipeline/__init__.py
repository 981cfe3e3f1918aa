"""Dagster wiring for geoscout: assets, resources, partitions, sensors, schedules, checks.

Asset bodies stay thin: they read config and partition keys, call into ``geo_assets`` or
``training``, and turn the results into metadata.
"""
