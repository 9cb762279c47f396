"""Errors that name the node, the input and the fix, so users never see a bare traceback."""

from __future__ import annotations


class PAEInputError(ValueError):
    """Bad input to a node: carries the input's name and a message saying what to do.

    The engine raises it with ``input_name`` set; the node layer adds ``node`` (its id) before it
    reaches ComfyUI, so the message reads ``PAE_VAEEncode: input 'audio': ...``.
    """

    def __init__(self, input_name: str | None, message: str, node: str | None = None):
        self.input_name = input_name
        self.message = message
        self.node = node
        super().__init__(self._render())

    def _render(self) -> str:
        parts = []
        if self.node:
            parts.append(f"{self.node}:")
        if self.input_name:
            parts.append(f"input '{self.input_name}':")
        parts.append(self.message)
        return " ".join(parts)

    def for_node(self, node: str) -> "PAEInputError":
        """Return the same error attributed to ``node`` (keeps an existing attribution)."""
        if self.node:
            return self
        return PAEInputError(self.input_name, self.message, node=node)

    def __reduce__(self):
        return (PAEInputError, (self.input_name, self.message, self.node))
