"""The remote cache: a team's and its CI's shared store of images and run-cache entries.

One object store (S3, Google Cloud Storage, Azure, a folder, or a plain HTTP cache), reached
through obstore, holds the same two things as the local cache, under the URL's prefix::

    s3://bucket/prefix/objects/ab/abcdef…     image bytes, named by their sha256
    s3://bucket/prefix/runs/ab/abcdef….json   a run entry: spec digest → the run record

Both are content-addressed or digest-keyed, so writers never conflict: the same key always
means the same bytes (objects) or the same spec (entries; the last writer wins, which is fine
since any signed entry for a spec is a true answer for it).

**Trust.** A downloaded object is hashed while it streams to a temp file beside its
destination and is renamed into place only if its sha256 is the one asked for; otherwise it
counts as absent, with one warning, and no file is left. A run entry cannot be checked that
way, so with ``IMGBUILD_CACHE_KEY`` set entries are signed with HMAC-SHA256 (over the spec
digest and the record's exact bytes, see :mod:`._trust`), and unsigned or badly signed ones
are ignored with a warning: a writer without the key cannot make others restore an image of
its choosing. Credentials come only from each store's usual environment (``AWS_*``,
``GOOGLE_*``, ``AZURE_*``), never from the URL; every message is passed through
:func:`redact`, which hides those variables' values, the cache key, URL queries and user-info.

**Failure policy: a remote that fails costs a warning, never a build.** Operations return
absent / ``False`` instead of raising. Timeouts are short and the remote's own (connect 2 s, a
lookup 10 s, a transfer 30 s, two retries: :class:`RemoteOptions`). The first failure to reach
the remote, or any failed read, marks the store down for the rest of the run: one warning line,
then no more waiting, every operation answers at once. A refused or failed write (403, a full
bucket) stops uploads only, with one warning, and lookups go on. Modes: ``readwrite``
(default), ``read`` (lookups only, for untrusted pull requests) and ``off`` (no client is even
built, so no connection is ever opened).

Use::

    remote = open_remote("s3://bucket/imgbuild", "readwrite", on_warning=ui.warn)
    record = await remote.get_run(spec_digest)           # bytes put by put_run, or None
    if record and await remote.get_object(sha, dest):    # verified, atomically in place
        ...
    remote.publish(spec_digest, record_bytes, [(sha, path)])   # background upload
    uploaded = await remote.drain(timeout_s=60)
"""

from ._client import REMOTE_MODES, RemoteConfigError, RemoteMode, RemoteOptions
from ._store import RemoteStats, RemoteStore, object_key, open_remote, run_key
from ._trust import KEY_ENV, redact

REMOTE_ENV = "IMGBUILD_REMOTE_CACHE"

__all__ = [
    "KEY_ENV",
    "REMOTE_ENV",
    "REMOTE_MODES",
    "RemoteConfigError",
    "RemoteMode",
    "RemoteOptions",
    "RemoteStats",
    "RemoteStore",
    "object_key",
    "open_remote",
    "redact",
    "run_key",
]
