"""The change feed on Redis Streams: one stream, ``<prefix>:feed``, that processes on many machines share.

Positions: every entry's stream id is ``0-<position>``. A Lua script appends an ingest's entries with
``XADD <stream> 0-* …``, so Redis itself gives each one the next sequence number after the stream's last
id: position order is stream order by construction, there is no second key (a counter) to keep in step
with the stream, and a script runs atomically, so an ingest's entries are consecutive and no other
writer's entry lands between them. ``read_after(p)`` is ``XRANGE <stream> 0-<p+1> +``;
``trim_through(p)`` is ``XTRIM <stream> MINID 0-<p+1>`` (the last generated id, hence positions, stay).
Needs Redis 7.0+ (ids with an explicit time and an automatic sequence number).
"""
from __future__ import annotations

import pyarrow as pa
import redis

from feed.base import ChangeFeed, FeedEntry, bytes_table, table_bytes

# `#!lua` (no `no-writes` flag): Redis refuses the whole script up front when out of memory, rather than
# after some of an ingest's entries are in.
_APPEND = """#!lua
local last
for i = 1, #ARGV, 2 do
  last = redis.call('XADD', KEYS[1], '0-*', 'source', ARGV[i], 'rows', ARGV[i + 1])
end
return last
"""

# The stream's last generated id (not its last entry's: an entry deleted by hand does not lower it).
_LAST_ID = """#!lua flags=no-writes
if redis.call('EXISTS', KEYS[1]) == 0 then return '0-0' end
local info = redis.call('XINFO', 'STREAM', KEYS[1])
for i = 1, #info, 2 do
  if info[i] == 'last-generated-id' then return info[i + 1] end
end
"""

# The oldest entry's id and the last generated one, read together.
_ENDS = """#!lua flags=no-writes
if redis.call('EXISTS', KEYS[1]) == 0 then return {false, '0-0'} end
local info = redis.call('XINFO', 'STREAM', KEYS[1])
local first, last = false, '0-0'
for i = 1, #info, 2 do
  if info[i] == 'first-entry' and info[i + 1] then first = info[i + 1][1] end
  if info[i] == 'last-generated-id' then last = info[i + 1] end
end
return {first, last}
"""


def _position(stream_id: bytes | str) -> int:
    """The position a ``0-<position>`` stream id stands for."""
    text = stream_id.decode() if isinstance(stream_id, bytes) else stream_id
    return int(text.split("-", 1)[1])


class RedisFeed(ChangeFeed):
    """A feed in the stream ``<prefix>:feed`` of the Redis server `client` talks to."""

    def __init__(self, client: redis.Redis, prefix: str):
        self.client, self.prefix = client, prefix
        self.stream = f"{prefix}:feed"
        self._append = client.register_script(_APPEND)
        self._last_id = client.register_script(_LAST_ID)
        self._ends = client.register_script(_ENDS)

    def append(self, frames: dict[str, pa.Table]) -> int:
        pairs = [value for source, table in frames.items() for value in (source, table_bytes(table))]
        return _position(self._append(keys=[self.stream], args=pairs))

    def read_after(self, position: int, limit: int = 1000) -> list[FeedEntry]:
        entries = self.client.xrange(self.stream, min=f"0-{position + 1}", max="+", count=limit)
        return [FeedEntry(_position(stream_id), fields[b"source"].decode(), bytes_table(fields[b"rows"]))
                for stream_id, fields in entries]

    def last_position(self) -> int:
        return _position(self._last_id(keys=[self.stream]))

    def trim_through(self, position: int) -> None:
        if position <= 0:  # nothing to drop (and 0--n is no stream id)
            return
        self.client.xtrim(self.stream, minid=f"0-{position + 1}", approximate=False)  # every id below it

    def trimmed_through(self) -> int:
        first, last = self._ends(keys=[self.stream])
        return _position(first) - 1 if first else _position(last)

    def close(self) -> None:
        self.client.close()
