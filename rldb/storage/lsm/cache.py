"""A bytes-bounded LRU cache of verified data blocks, shared by all tables."""
import threading
from collections import OrderedDict


class BlockCache:
    """Keys are (table number, block number).  A hit only moves the entry to the
    young end; inserts and evictions take the lock."""

    def __init__(self, capacity):
        self.capacity = capacity
        self.size = 0
        self.hits = 0
        self.misses = 0
        self.evictions = 0
        self._blocks = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key):
        block = self._blocks.get(key)
        if block is None:
            self.misses += 1
            return None
        self.hits += 1
        try:
            self._blocks.move_to_end(key)
        except KeyError:  # evicted meanwhile by another thread; the block is still good
            pass
        return block

    def put(self, key, block):
        if len(block) > self.capacity:
            return
        with self._lock:
            old = self._blocks.pop(key, None)
            if old is not None:
                self.size -= len(old)
            self._blocks[key] = block
            self.size += len(block)
            while self.size > self.capacity:
                _, evicted = self._blocks.popitem(last=False)
                self.size -= len(evicted)
                self.evictions += 1

    def drop_table(self, number):
        """Forgets every block of a deleted table."""
        with self._lock:
            for key in [k for k in self._blocks if k[0] == number]:
                self.size -= len(self._blocks.pop(key))

    def check(self):
        with self._lock:
            total = sum(len(b) for b in self._blocks.values())
            assert total == self.size, f"cache size {self.size} != {total}"
            assert self.size <= self.capacity, "cache over capacity"

    def stats(self):
        return {"capacity": self.capacity, "bytes": self.size, "blocks": len(self._blocks),
                "hits": self.hits, "misses": self.misses, "evictions": self.evictions}
