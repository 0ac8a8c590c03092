"""Open Table objects, at most max_open_files of them (least recently used go)."""
import os
import threading
from collections import OrderedDict

from rldb.storage.lsm.format import table_name
from rldb.storage.lsm.table import Table


class TableCache:
    def __init__(self, dirname, capacity, block_cache, counters):
        self.dirname = dirname
        self.capacity = capacity
        self.block_cache = block_cache
        self.counters = counters
        self.opens = 0
        self._tables = OrderedDict()
        self._lock = threading.Lock()

    def get(self, meta):
        table = self._tables.get(meta.number)
        if table is not None:
            try:
                self._tables.move_to_end(meta.number)
            except KeyError:
                pass
            return table
        with self._lock:
            table = self._tables.get(meta.number)
            if table is None:
                table = Table(os.path.join(self.dirname, table_name(meta.number)), meta.number,
                              self.block_cache, self.counters)
                self.opens += 1
                self._tables[meta.number] = table
                while len(self._tables) > self.capacity:
                    self._tables.popitem(last=False)  # closed when no reader holds it
            return table

    def evict(self, number):
        with self._lock:
            self._tables.pop(number, None)
        self.block_cache.drop_table(number)

    def clear(self):
        with self._lock:
            self._tables.clear()

    def __len__(self):
        return len(self._tables)
