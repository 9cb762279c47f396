"""Audio in and out: decoding, encoding, resampling, the input and output files, and preview images."""
