"""Partition definitions, imported by the assets, jobs and sensors that use them."""

import dagster as dg

# One partition per crawl cell (quadtree id at the crawl level); a sensor registers them.
crawl_cells = dg.DynamicPartitionsDefinition(name="crawl_cells")
