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
        self._kept: dict[Hashable, T] | None = None  # strong references while keep_loaded is on
        self._lock = threading.Lock()
        self.loads = 0  # how many times load() ran in this process

    def get_or_load(self, key: Hashable, load: Callable[[], T]) -> T:
        """The cached object for key, or load() it (under the lock) and remember it."""
        with self._lock:
            item = self._items.get(key)
            if item is None:
                item = load()
                self.loads += 1
                self._items[key] = item
            if self._kept is not None:
                self._kept[key] = item
            return item

    def keep_loaded(self, keep: bool) -> None:
        """Hold every loaded object until turned off: a long-lived worker (a Ray actor running job after job) keeps
        its models between runs, where nothing else holds them."""
        with self._lock:
            self._kept = {} if keep else None

    def clear(self) -> None:
        """Forget everything (tests; ComfyUI frees memory through its own model management)."""
        with self._lock:
            self._items.clear()
            if self._kept is not None:
                self._kept.clear()
