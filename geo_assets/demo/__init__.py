"""The built-in demo world and a loopback server answering like Mapillary Graph API v4 and
the Street View Static API, so that geoscout runs end to end with no keys and no network.

Modules: ``places`` (countries, cities, climate bands), ``world`` (the seeded generator:
``generate_world``, ``DemoWorld.accuracy_ceiling``), ``style`` and ``render`` (procedural
JPEGs: ``render_image``), ``signing`` (Google URL signatures, expiring CDN links),
``faults`` (``FaultConfig``), ``mvt`` and ``tiles`` (coverage vector tiles), ``reply``,
``mapillary_api`` and ``streetview_api`` (request handlers), ``server`` (``DemoServer`` and
the ``geoscout demo-server`` command).
"""
