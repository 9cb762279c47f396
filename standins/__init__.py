"""Tiny untrained models in the released layouts, for the demo and the tests; the engine never imports them."""
