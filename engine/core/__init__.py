"""Shared ground of the engine: errors, load caches, LATENT bookkeeping, safe files, checkpoints, model folders and
the one bridge to ComfyUI.
"""
