"""Bounded, rolling statistics of what serving returned, per ETL, persisted to the catalog.

Windows live in memory (at most `max_etls`, least recently used dropped after
being saved), are loaded from the catalog on first use, and are saved by a
background thread every `flush_seconds` and once more on shutdown.

With several serving processes (WORKERS>1) each keeps the windows of the requests it served and saves
them under its own `slot` (``<etl_id>@<slot>``; the primary's, slot "", under the plain id), so no
process overwrites another's. `report_window` merges this process's live window with the others'
last saved ones: the skew report counts every process's requests, each other process's as of its
last flush.
"""
from __future__ import annotations

import logging
import threading
from collections import OrderedDict

from catalog.base import Catalog
from common.errors import FeatureStoreError
from checks.stats import ServingWindow

log = logging.getLogger(__name__)


class ServingStats:
    """ServingWindow per ETL id, kept in step with the catalog."""

    def __init__(self, catalog: Catalog, window_size: int, flush_seconds: float, max_etls: int = 1000,
                 slot: str = "", peer_slots: tuple[str, ...] = ()):
        self.catalog = catalog
        self.slot, self.peer_slots = slot, peer_slots
        self.window_size = window_size
        self.flush_seconds = flush_seconds
        self.max_etls = max_etls
        self._windows: OrderedDict[str, ServingWindow] = OrderedDict()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def window(self, etl_id: str) -> ServingWindow:
        """The ETL's window, loaded from the catalog the first time (empty if it cannot be read)."""
        with self._lock:
            window = self._windows.get(etl_id)
            if window is not None:
                self._windows.move_to_end(etl_id)
                return window
        window = self._load(etl_id)
        with self._lock:
            window = self._windows.setdefault(etl_id, window)
            evicted = []
            while len(self._windows) > self.max_etls:
                evicted.append(self._windows.popitem(last=False))
        for evicted_id, evicted_window in evicted:
            self._save(evicted_id, evicted_window)
        return window

    def flush(self) -> int:
        """Save every window changed since its last save; return how many were saved."""
        with self._lock:
            dirty = [(etl_id, w) for etl_id, w in self._windows.items() if w.dirty]
        return sum(self._save(etl_id, window) for etl_id, window in dirty)

    def start(self) -> None:
        """Save changed windows every `flush_seconds` in a daemon thread."""
        if self._thread is None and self.flush_seconds > 0:
            self._thread = threading.Thread(target=self._run, name="serving-stats-flush", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop the thread and save what is left."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.flush()

    def _run(self) -> None:
        while not self._stop.wait(self.flush_seconds):
            self.flush()

    def _load(self, etl_id: str) -> ServingWindow:
        try:
            saved = self.catalog.get_serving_stats(self._key(etl_id))
        except FeatureStoreError as error:
            log.warning("serving statistics of %s not loaded: %s", etl_id, error.message)
            saved = None
        return ServingWindow.from_dict(saved, self.window_size) if saved else ServingWindow(self.window_size)

    def _key(self, etl_id: str, slot: str | None = None) -> str:
        slot = self.slot if slot is None else slot
        return f"{etl_id}@{slot}" if slot else etl_id

    def report_window(self, etl_id: str) -> ServingWindow:
        """This process's window of the ETL merged with the other serving processes' saved ones."""
        windows = [self.window(etl_id)]
        for slot in self.peer_slots:
            try:
                saved = self.catalog.get_serving_stats(self._key(etl_id, slot))
            except FeatureStoreError as error:
                log.warning("serving statistics of %s (process %s) not loaded: %s", etl_id, slot, error.message)
                continue
            if saved:
                windows.append(ServingWindow.from_dict(saved, self.window_size))
        return windows[0] if len(windows) == 1 else ServingWindow.merged(windows)

    def _save(self, etl_id: str, window: ServingWindow) -> bool:
        window.dirty = False
        try:
            self.catalog.save_serving_stats(self._key(etl_id), window.to_dict())
            return True
        except FeatureStoreError as error:
            window.dirty = True
            log.warning("serving statistics of %s not saved: %s", etl_id, error.message)
            return False
