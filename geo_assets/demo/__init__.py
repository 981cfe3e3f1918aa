"""The built-in demo world and a loopback server answering like Mapillary Graph API v4 and
the Street View Static API, so that geoscout runs end to end with no keys and no network.

Modules: ``places`` (countries, cities, climate), ``world`` (the seeded generator),
``style`` and ``render`` (procedural JPEGs), ``signing`` (URL signatures), ``faults``
(fault injection), ``mvt`` and ``tiles`` (coverage vector tiles), ``mapillary_api`` and
``streetview_api`` (request handlers), ``server`` (the HTTP server and CLI).
"""
