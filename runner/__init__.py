"""The pae command: the in-process workflow runner and the client that queues workflows on ComfyUI servers."""
