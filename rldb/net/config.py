"""A node's configuration: the original project's keys (port, quorum,
heartbeat) plus ours.  Every key is checked; the first problem stops the
start with one line naming the key."""
import json
from dataclasses import dataclass, field

ENGINES = ("lsm", "bitcask", "memory")


class ConfigError(ValueError):
    pass


@dataclass
class Quorum:
    n: int = 1
    r: int = 1
    w: int = 1


@dataclass
class Heartbeat:
    fanout: int = 2
    interval: int = 500  # ms


@dataclass
class Config:
    port: int = 3001
    host: str = "127.0.0.1"
    quorum: Quorum = field(default_factory=Quorum)
    heartbeat: Heartbeat = field(default_factory=Heartbeat)
    data_dir: str = None
    storage_engine: str = "lsm"
    storage_options: dict = field(default_factory=dict)
    partitions: int = 64
    request_timeout_ms: int = 5000
    idle_timeout_ms: int = 300_000
    max_connections: int = 1024
    node_id: str = None
    sloppy_timeout_ms: int = 500      # a silent replica gets a fallback after this
    handoff_keys_per_s: int = 20_000  # hints and partition transfers, to each peer
    handoff_batch: int = 256
    aae_interval_ms: int = 500        # between scheduled anti-entropy exchanges; 0 is off
    aae_keys_per_s: int = 10_000      # repairs anti-entropy may make per second
    tombstone_grace_ms: int = 3_600_000  # a delete's tombstone is kept at least this long
    resp_port: int = None             # where the node also speaks RESP2 (Redis); off if None
    forward_timeout_ms: int = None    # a forward's wait for one replica; default request/4
    peer_send_timeout_ms: int = 2000  # a peer link not drained within this is closed
    floor_retention_ms: int = 86_400_000  # a collected key's version floor is kept this long
    max_clock_skew_ms: int = 1000     # how far nodes' clocks may differ (deadlines allow it)

    @property
    def addr(self):
        return f"{self.host}:{self.port}"


def _int(obj, name, where, low, high=None):
    if name not in obj:
        return None
    value = obj[name]
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigError(f"{where}{name}: must be an integer, not {json.dumps(value)}")
    if value < low or (high is not None and value > high):
        bound = f"{low}..{high}" if high is not None else f">= {low}"
        raise ConfigError(f"{where}{name}: must be {bound}, not {value}")
    return value


def _unknown(obj, known, where):
    extra = sorted(set(obj) - set(known))
    if extra:
        raise ConfigError(f"{where}{extra[0]}: unknown key (known: {', '.join(sorted(known))})")


def parse(obj):
    """A Config from a decoded JSON object."""
    if not isinstance(obj, dict):
        raise ConfigError("the configuration must be a JSON object")
    known = ("port", "host", "quorum", "heartbeat", "data_dir", "storage_engine",
             "storage_options", "partitions", "request_timeout_ms", "idle_timeout_ms",
             "max_connections", "node_id", "sloppy_timeout_ms", "handoff_keys_per_s",
             "handoff_batch", "aae_interval_ms", "aae_keys_per_s", "tombstone_grace_ms",
             "resp_port", "forward_timeout_ms", "peer_send_timeout_ms", "floor_retention_ms",
             "max_clock_skew_ms")
    _unknown(obj, known, "")
    if "port" not in obj:
        raise ConfigError("port: missing (the TCP port to listen on)")
    cfg = Config()
    cfg.port = _int(obj, "port", "", 1, 65535)
    cfg.resp_port = _int(obj, "resp_port", "", 1, 65535)
    if cfg.resp_port == cfg.port:
        raise ConfigError(f"resp_port: must differ from port ({cfg.port})")
    for name in ("partitions", "request_timeout_ms", "idle_timeout_ms", "max_connections",
                 "sloppy_timeout_ms", "handoff_keys_per_s", "handoff_batch", "aae_keys_per_s",
                 "forward_timeout_ms", "peer_send_timeout_ms", "floor_retention_ms"):
        value = _int(obj, name, "", 1)
        if value is not None:
            setattr(cfg, name, value)
    for name in ("aae_interval_ms", "tombstone_grace_ms", "max_clock_skew_ms"):
        value = _int(obj, name, "", 0)
        if value is not None:
            setattr(cfg, name, value)
    if cfg.partitions & (cfg.partitions - 1) or cfg.partitions > 4096:
        raise ConfigError(f"partitions: must be a power of two up to 4096, not {cfg.partitions}")
    for name in ("host", "data_dir", "node_id"):
        if name in obj:
            if not isinstance(obj[name], str) or not obj[name]:
                raise ConfigError(f"{name}: must be a non-empty string, not {json.dumps(obj[name])}")
            setattr(cfg, name, obj[name])
    if "storage_engine" in obj:
        if obj["storage_engine"] not in ENGINES:
            raise ConfigError(f"storage_engine: must be one of {', '.join(ENGINES)}, "
                              f"not {json.dumps(obj['storage_engine'])}")
        cfg.storage_engine = obj["storage_engine"]
    if "storage_options" in obj:
        if not isinstance(obj["storage_options"], dict):
            raise ConfigError("storage_options: must be an object of engine options")
        cfg.storage_options = dict(obj["storage_options"])
    if "quorum" in obj:
        q = obj["quorum"]
        if not isinstance(q, dict):
            raise ConfigError("quorum: must be an object with n, r and w")
        _unknown(q, ("n", "r", "w"), "quorum.")
        for name in ("n", "r", "w"):
            if name not in q:
                raise ConfigError(f"quorum.{name}: missing")
        cfg.quorum = Quorum(_int(q, "n", "quorum.", 1, 16), _int(q, "r", "quorum.", 1, 16),
                            _int(q, "w", "quorum.", 1, 16))
        if cfg.quorum.r > cfg.quorum.n or cfg.quorum.w > cfg.quorum.n:
            raise ConfigError(f"quorum: r and w must not exceed n (n={cfg.quorum.n}, "
                              f"r={cfg.quorum.r}, w={cfg.quorum.w})")
    if "heartbeat" in obj:
        h = obj["heartbeat"]
        if not isinstance(h, dict):
            raise ConfigError("heartbeat: must be an object with fanout and interval")
        _unknown(h, ("fanout", "interval"), "heartbeat.")
        cfg.heartbeat = Heartbeat(_int(h, "fanout", "heartbeat.", 1, 64) or 2,
                                  _int(h, "interval", "heartbeat.", 10, 600_000) or 500)
    _check_timeouts(cfg)
    if cfg.storage_engine != "memory" and cfg.data_dir is None:
        cfg.data_dir = f"data/{cfg.port}"
    if cfg.node_id is None:
        cfg.node_id = cfg.addr
    return cfg


def _check_timeouts(cfg):
    """The bounds that make forwards and tombstone collection safe: a
    forward must leave time for another replica, and a tombstone must
    outlive any version still queued on a peer link (which is closed once
    it has not drained for peer_send_timeout_ms), and its floor the grace,
    a request and a link drain together (docs/consistency.md)."""
    if cfg.forward_timeout_ms is None:
        cfg.forward_timeout_ms = max(1, cfg.request_timeout_ms // 4)
    elif cfg.forward_timeout_ms >= cfg.request_timeout_ms:
        raise ConfigError(f"forward_timeout_ms: must be less than request_timeout_ms "
                          f"({cfg.request_timeout_ms}), not {cfg.forward_timeout_ms}")
    if cfg.tombstone_grace_ms <= cfg.peer_send_timeout_ms:
        raise ConfigError(f"tombstone_grace_ms: must be longer than peer_send_timeout_ms "
                          f"({cfg.peer_send_timeout_ms}), not {cfg.tombstone_grace_ms}: a version "
                          f"still queued on a peer link could outlive its tombstone")
    least = cfg.tombstone_grace_ms + cfg.request_timeout_ms + cfg.peer_send_timeout_ms
    if cfg.floor_retention_ms < least:
        raise ConfigError(f"floor_retention_ms: must be at least tombstone_grace_ms + "
                          f"request_timeout_ms + peer_send_timeout_ms ({least}), "
                          f"not {cfg.floor_retention_ms}")


def load(path):
    """A Config from a JSON file; ConfigError with one clear line otherwise."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    try:
        obj = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"{path} is not valid JSON: {exc}") from None
    return parse(obj)
