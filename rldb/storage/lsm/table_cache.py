"""The open Table of every file a live version names (footer, filter and index
in memory), and the descriptors behind them (bounded by max_open_files)."""
import os
import threading

from rldb.storage.lsm.format import table_name
from rldb.storage.lsm.table import FileCache, Table


class TableCache:
    def __init__(self, dirname, max_open_files, block_cache, counters):
        self.dirname = dirname
        self.block_cache = block_cache
        self.counters = counters
        self.files = FileCache(max_open_files)
        self._tables = {}
        self._lock = threading.Lock()

    def get(self, meta):
        return self.by_number(meta.number)

    def by_number(self, number):
        table = self._tables.get(number)
        if table is not None:
            return table
        with self._lock:
            table = self._tables.get(number)
            if table is None:
                table = Table(os.path.join(self.dirname, table_name(number)), number,
                              self.files, self.counters)
                self._tables[number] = table
            return table

    def load_block(self, number, block, offset, size):
        """Reads a data block into the block cache; False when it is too big."""
        return self.by_number(number).load_into(self.block_cache, block, offset, size)

    def evict(self, number):
        with self._lock:
            table = self._tables.pop(number, None)
        self.files.forget(number)
        if table is not None:
            self.block_cache.erase_table(number, table.index.count)

    def clear(self):
        with self._lock:
            self._tables.clear()

    def __len__(self):
        return len(self._tables)
