"""Attention control shared by every method: edit specs, word alignment, fusion schedules, controllers, processors."""
