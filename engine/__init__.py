"""The pack's engine: audio, models and methods, importable and testable without ComfyUI."""
