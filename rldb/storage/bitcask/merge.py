"""Merging: the live entries of some immutable data files are rewritten into
new files, so that the space of overwritten and deleted entries comes back.

The steps, each safe to crash after (docs/formats.md, section "Bitcask"):

 1. Pick the inputs: immutable files whose dead bytes reach merge_threshold,
    plus the small files once there are merge_small_files of them (all of
    them for merge(full=True)).  The outputs get the highest rank of the
    inputs, so they sit where the inputs sat in the recovery order.
 2. Copy, in C, every entry the keydir still points at into outputs written
    under temporary names (*.tmp), each with its hint.  A tombstone is
    dropped only when no file outside the inputs has a lower rank than the
    tombstone's file: only such a file could still hold an older value of
    the key.  Reads and writes go on meanwhile (the C calls release the GIL).
 3. fsync the outputs and their hints, then the directory.
 4. Commit in memory (C): the keydir is pointed at each copy whose original
    it still names (a key written again meanwhile keeps its newer entry),
    dropped tombstones leave the keydir, and no keydir entry may point into
    an input any more.
 5. Write the MERGE manifest (tmp, fsync, rename, fsync the directory): from
    here the merge is committed on disk.
 6. Rename the outputs to their final names; fsync the directory.
 7. Delete the inputs, oldest first, each hint before its data file; fsync
    the directory; delete MERGE; fsync the directory.

A crash before step 5 leaves the inputs and some *.tmp files, which open
deletes.  After step 5, open finishes steps 6 and 7 from the manifest.  The
inputs go oldest first so that, whatever subset of them a crash leaves, no
older value comes back: a value in a remaining input whose tombstone was
dropped sits in a file at least as old as the tombstone's, so it went first."""
import os

from rldb.errors import CorruptionError
from rldb.storage.bitcask import files as fs
from rldb.storage.directory import fsync_dir


class MergeAborted(Exception):
    """The engine is closing: the merge stopped before its commit."""


def pick_inputs(immutable, infos, options, full):
    """The files to merge, oldest first.  immutable: DataFiles in (rank, id)
    order; infos: slot -> the C side's figures (size, live)."""
    # A caller outside the merge lock may name a file that a merge has just
    # removed (its slot possibly reused): such files are left out.
    immutable = [f for f in immutable if f.slot in infos and infos[f.slot]["id"] == f.id]
    if full:
        return list(immutable)
    threshold = options["merge_threshold"]
    chosen = []
    for f in immutable:
        size, live = infos[f.slot]["size"], infos[f.slot]["live"]
        if size and (size - live) / size >= threshold:
            chosen.append(f)
    count = options["merge_small_files"]
    if count:
        limit = max(options["max_file_size"] // 4, 1)
        small = [f for f in immutable if infos[f.slot]["size"] < limit]
        if len(small) >= count:
            chosen += [f for f in small if f not in chosen]
    return sorted(chosen, key=lambda f: (f.rank, f.id))


def _no_hook(step):
    pass


def run_merge(files, options, full=False, stopping=lambda: False, hook=None,
              keydir_uncertain=lambda: None):
    """One merge of the data files in files (a DataFiles); the stats of the C
    merge, or None when nothing needed one.  The caller runs one merge at a
    time.  stopping(): True once the engine closes (the merge then raises
    MergeAborted before its commit); hook(step): called after each step (tests
    crash there); keydir_uncertain(): called when the commit in memory failed,
    after which the keydir may point into the outputs, so merging must stop."""
    bc = files.bc
    immutable = files.immutable()
    inputs = pick_inputs(immutable, files.infos(), options, full)
    if not inputs:
        return None
    outside = [f for f in immutable if f not in inputs]
    rank = max(f.rank for f in inputs)
    hook = hook or _no_hook
    merge = bc.merge(options["max_file_size"])
    outputs, current, sizes = [], None, {}
    try:
        for f in inputs:
            drop_tombstones = all(g.rank > f.rank for g in outside)
            resume, done = 0, False
            while not done:
                if stopping():
                    raise MergeAborted()
                if current is None:
                    current = files.new_output(rank)
                    outputs.append(current)
                    merge.set_output(current.slot, current.hint_fd)
                done, resume = merge.merge_file(f.slot, drop_tombstones, resume)
                if not done:
                    sizes[current.id] = merge.finish_output()
                    current = None
            hook("input-copied")
        if current is not None:
            sizes[current.id] = merge.finish_output()
        empty = [o for o in outputs if sizes[o.id] == 0]  # every entry was dead
        files.discard_outputs(empty)
        outputs = [o for o in outputs if sizes[o.id]]
        hook("outputs-written")
        for out in outputs:
            os.fsync(out.fd)
            os.fsync(out.hint_fd)
            os.close(out.hint_fd)
            out.hint_fd = -1
        fsync_dir(files.path)
        hook("outputs-synced")
    except BaseException:
        files.discard_outputs(outputs)
        raise
    try:
        merge.commit([f.slot for f in inputs])
    except BaseException:
        # The keydir may name the outputs now: keep them (still *.tmp on disk,
        # so the next open uses the inputs, which hold the same data) and stop
        # merging in this process.
        keydir_uncertain()
        raise
    hook("committed")
    fs.write_manifest(files.path, [f.data_name() for f in inputs],
                      [fs.data_name(o.rank, o.id) for o in outputs])
    hook("manifest-written")
    for out in outputs:
        files.commit_output(out)
    fsync_dir(files.path)
    hook("outputs-renamed")
    for f in inputs:  # oldest first
        files.remove(f)
        hook("input-deleted")
    fsync_dir(files.path)
    fs.unlink(files.path_of(fs.MERGE))
    fsync_dir(files.path)
    hook("done")
    stats = merge.stats()
    stats["inputs"] = len(inputs)
    stats["outputs"] = len(outputs)
    return stats


def finish_manifest(dirname):
    """Completes a merge that a crash interrupted after its commit (steps 6
    and 7), at open, before anything is loaded."""
    inputs, outputs = fs.read_manifest(dirname)
    for name in outputs:
        rank, file_id, _ = fs.parse_name(name)
        for final in (name, fs.hint_name(rank, file_id)):
            tmp = os.path.join(dirname, final + fs.TMP)
            if os.path.exists(tmp):
                os.rename(tmp, os.path.join(dirname, final))
        if not os.path.exists(os.path.join(dirname, name)):
            raise CorruptionError("a committed merge output is missing",
                                  os.path.join(dirname, name))
    fsync_dir(dirname)
    for name in sorted(inputs, key=lambda n: fs.parse_name(n)[:2]):
        rank, file_id, _ = fs.parse_name(name)
        fs.unlink(os.path.join(dirname, fs.hint_name(rank, file_id)))
        fs.unlink(os.path.join(dirname, name))
    fsync_dir(dirname)
    fs.unlink(os.path.join(dirname, fs.MERGE))
    fsync_dir(dirname)
