"""Diffusion without edits: step formulas, classifier-free guidance, inversion, plain sampling and the VAE entries."""
