"""Objects loaded from disk once and shared while something holds them."""

from __future__ import annotations

import threading
import weakref
from typing import Callable, Generic, Hashable, TypeVar

T = TypeVar("T")


class LoadCache(Generic[T]):
    """Weak-valued: a model lives while ComfyUI's output cache (or a run) holds it and is freed with it, so
    switching models does not pile them up in memory. Loads are serialised so a model is never built twice."""

    def __init__(self) -> None:
        self._items: "weakref.WeakValueDictionary[Hashable, T]" = weakref.WeakValueDictionary()
        self._lock = threading.Lock()

    def get_or_load(self, key: Hashable, load: Callable[[], T]) -> T:
        """The cached object for key, or load() it (under the lock) and remember it."""
        with self._lock:
            item = self._items.get(key)
            if item is None:
                item = load()
                self._items[key] = item
            return item

    def clear(self) -> None:
        """Forget everything (tests; ComfyUI frees memory through its own model management)."""
        with self._lock:
            self._items.clear()
