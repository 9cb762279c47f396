"""Getting the models: the catalogue of what the pack reads, downloads at pinned revisions, checks, conversions."""
