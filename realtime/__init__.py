"""The realtime store: a recent window of the raw tables, in memory."""
from realtime.store import InMemoryRealtimeStore, open_realtime_store

__all__ = ["InMemoryRealtimeStore", "open_realtime_store"]
