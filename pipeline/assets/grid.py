"""Grid assets: land polygons and the land-filtered quadtree grid."""
