"""The model cache: loaded models, bounded by bytes, least recently used out, each loaded once."""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future

from apps.inference.loading import LoadedModel
from apps.inference.types import ModelSpec

logger = logging.getLogger(__name__)


class ModelCache:
    """Loaded models, least recently used out once their total size passes `max_bytes`.

    A model that many requests ask for at once is loaded by the first of them; the others wait for that load.
    """

    def __init__(self, loader: Callable[[ModelSpec], LoadedModel], *, max_bytes: int):
        self.loader = loader
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, LoadedModel] = OrderedDict()
        self._loading: dict[str, Future] = {}
        self._lock = threading.Lock()
        self.loads = 0
        self.evictions = 0

    def get(self, spec: ModelSpec) -> LoadedModel:
        with self._lock:
            if spec.key in self._entries:
                self._entries.move_to_end(spec.key)
                return self._entries[spec.key]
            future = self._loading.get(spec.key)
            owner = future is None
            if owner:
                future = self._loading[spec.key] = Future()
        if not owner:
            return future.result()
        try:
            loaded = self.loader(spec)
            self.loads += 1
        except BaseException as exc:
            future.set_exception(exc)
            with self._lock:
                del self._loading[spec.key]
            raise
        with self._lock:
            self._entries[spec.key] = loaded
            del self._loading[spec.key]
            self._evict_over_budget(keep=spec.key)
        future.set_result(loaded)
        return loaded

    def _evict_over_budget(self, *, keep: str) -> None:
        while sum(m.nbytes for m in self._entries.values()) > self.max_bytes and len(self._entries) > 1:
            key = next(k for k in self._entries if k != keep)
            evicted = self._entries.pop(key)
            self.evictions += 1
            if evicted.scheduler is not None:
                evicted.scheduler.stop()  # it finishes the sequences it holds, then lets the model go
            logger.info("evicted %s (%.0f MB) from the model cache", key, evicted.nbytes / 2**20)

    def keys(self) -> list[str]:
        with self._lock:
            return list(self._entries)

    def loaded(self) -> list[LoadedModel]:
        with self._lock:
            return list(self._entries.values())

    @property
    def total_bytes(self) -> int:
        with self._lock:
            return sum(m.nbytes for m in self._entries.values())
