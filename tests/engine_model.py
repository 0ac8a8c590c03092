"""A hypothesis state machine that runs any engine against a dict model.

Subclass it with an `open()` (and, for disk engines, `reopen()`), then call
check() after every step.  Shared by the memory, LSM and Bitcask tests."""
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

# A small key space so that overwrites, deletes of present keys and scans that
# cut through the data happen often.
keys = st.binary(min_size=1, max_size=4).filter(lambda k: k[0] < 8) | st.sampled_from(
    [b"\x00", b"\x00\x00", b"a", b"ab", b"abc", b"\xff", b"\xff\xff"])
values = st.binary(max_size=64)
bounds = st.none() | keys


def model_scan(model, start, end, reverse):
    items = sorted(
        (k, v) for k, v in model.items()
        if (start is None or k >= start) and (end is None or k < end))
    return items[::-1] if reverse else items


class EngineMachine(RuleBasedStateMachine):
    supports_scan = True
    supports_reopen = False

    def __init__(self):
        super().__init__()
        self.model = {}
        self.engine = self.open()

    def open(self):
        raise NotImplementedError

    def reopen(self):
        raise NotImplementedError

    @rule(key=keys, value=values)
    def put(self, key, value):
        self.engine.put(key, value)
        self.model[key] = value

    @rule(key=keys)
    def delete(self, key):
        self.engine.delete(key)
        self.model.pop(key, None)

    @rule(key=keys)
    def get(self, key):
        assert self.engine.get(key) == self.model.get(key)

    @rule(ops=st.lists(st.tuples(keys, st.none() | values), max_size=10))
    def write_batch(self, ops):
        batch = []
        for key, value in ops:
            if value is None:
                batch.append(("delete", key))
                self.model.pop(key, None)
            else:
                batch.append(("put", key, value))
                self.model[key] = value
        self.engine.write_batch(batch)

    @precondition(lambda self: self.supports_scan)
    @rule(start=bounds, end=bounds, reverse=st.booleans())
    def scan(self, start, end, reverse):
        got = list(self.engine.scan(start, end, reverse))
        assert got == model_scan(self.model, start, end, reverse)

    @precondition(lambda self: self.supports_reopen)
    @rule()
    def close_and_reopen(self):
        self.engine = self.reopen()

    @rule()
    def everything_readable(self):
        for key, value in self.model.items():
            assert self.engine.get(key) == value

    @invariant()
    def engine_is_consistent(self):
        self.engine.check()

    def teardown(self):
        self.engine.close()
