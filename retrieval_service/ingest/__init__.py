"""Building an index: sources stream artworks, the pipeline encodes them (checkpointed,
resumable) and publishes a version; likely duplicates are reported, removals republish."""
