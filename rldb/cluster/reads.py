"""What a read answers, from the merge of the replicas' clocks."""
from rldb.cluster import commands as c
from rldb.cluster import context, dvv


def read_reply(key, clock):
    """NotFound when every version is a tombstone; else the live siblings
    (oldest write first) and the context of the whole merged clock."""
    versions = sorted((ts, v) for v, ts in dvv.values(clock) if v is not None)
    if not versions:
        return c.not_found(key)
    return c.Ok(c.GetResult([v for _, v in versions], context.encode(dvv.join(clock)),
                            [ts for ts, _ in versions]))
