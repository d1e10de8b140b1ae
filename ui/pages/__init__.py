"""Console pages, one module each: `build(console, t)` draws the page."""
