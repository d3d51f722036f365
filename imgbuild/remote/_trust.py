"""What a reader can trust, and what is never shown.

**Signed run entries.** An entry maps a spec digest to a record (the local cache's run record,
as bytes). Objects are content-addressed and checked against their sha256 on download, so the
only thing a writer can forge is the entry: "this spec produced object X". With
``IMGBUILD_CACHE_KEY`` set, every entry carries an HMAC-SHA256 and readers that hold the key
ignore entries without a valid one, so a writer without the key cannot make others restore an
image of its choosing.

The stored entry is one JSON object (keys sorted)::

    {"hmac_sha256": "<hex>", "record": "<the record's UTF-8 text>",
     "spec_digest": "<hex>", "version": 1}

``hmac_sha256`` is absent when written without a key. The MAC covers the canonical bytes
``b"imgbuild-run-entry\\n1\\n" + spec_digest + b"\\n" + record``: the spec digest is inside, so a
valid entry copied to another spec's place is rejected like a forged one. The record is kept as
its exact bytes (as text), so a reader gets back precisely what the writer signed.

**Secrets.** The stores' credentials and the cache key live in the environment only;
:func:`redact` hides their values, URL queries (presigned URLs, SAS tokens) and URL user-info
in every message the remote cache produces.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
from collections.abc import Mapping
from typing import Any

KEY_ENV = "IMGBUILD_CACHE_KEY"
ENTRY_VERSION = 1
_DOMAIN = b"imgbuild-run-entry\n%d\n" % ENTRY_VERSION


class EntryRejected(Exception):
    """A run entry that must be treated as absent; the message says why, for a warning."""


def entry_mac(key: bytes, spec_digest: str, record: bytes) -> str:
    message = _DOMAIN + spec_digest.encode("ascii") + b"\n" + record
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def seal_entry(spec_digest: str, record: bytes, key: bytes | None) -> bytes:
    """The bytes to store for ``record`` under ``spec_digest``; signed when ``key`` is given."""
    try:
        text = record.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("a run record must be UTF-8 text (the engine's records are JSON)") from None
    entry: dict[str, Any] = {"version": ENTRY_VERSION, "spec_digest": spec_digest, "record": text}
    if key:
        entry["hmac_sha256"] = entry_mac(key, spec_digest, record)
    return json.dumps(entry, sort_keys=True, ensure_ascii=False).encode("utf-8") + b"\n"


def open_entry(data: bytes, spec_digest: str, key: bytes | None) -> bytes:
    """The record inside a stored entry, or :class:`EntryRejected` saying why it is ignored.

    Without a key every well-formed entry for this spec is accepted (there is nothing to check
    it with); with one, only entries whose MAC verifies.
    """
    try:
        entry = json.loads(data)
    except ValueError:
        raise EntryRejected("unreadable (not JSON)") from None
    if not isinstance(entry, dict) or not isinstance(entry.get("version"), int):
        raise EntryRejected("unreadable (no format version)")
    if entry["version"] > ENTRY_VERSION:
        raise EntryRejected(f"written by a newer imgbuild (format {entry['version']})")
    if entry["version"] != ENTRY_VERSION:
        raise EntryRejected(f"old format {entry['version']}")
    record, mac = entry.get("record"), entry.get("hmac_sha256")
    if entry.get("spec_digest") != spec_digest or not isinstance(record, str):
        raise EntryRejected("not an entry for this spec")
    raw = record.encode("utf-8")
    if key:
        if not isinstance(mac, str):
            raise EntryRejected("not signed, and IMGBUILD_CACHE_KEY is set")
        if not hmac.compare_digest(mac, entry_mac(key, spec_digest, raw)):
            raise EntryRejected("bad signature (written with another key, or altered)")
    return raw


# Variables of the stores' usual environments whose values are secrets (or may be).
_SECRET_NAME = re.compile(r"^(AWS|AZURE|ARM|GOOGLE|GCS|GCP)_\w*(SECRET|KEY|TOKEN|PASSWORD|SAS|"
                          r"CREDENTIAL)\w*$")
_URL_QUERY = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^\s?#]*)[?#][^\s]*", re.IGNORECASE)
_URL_USERINFO = re.compile(r"(\b[a-z][a-z0-9+.-]*://)[^\s/@]+@", re.IGNORECASE)


def secrets_in(env: Mapping[str, str] | None = None) -> list[str]:
    """The secret values in ``env`` (default: the process's), longest first."""
    env = os.environ if env is None else env
    found = {v for k, v in env.items() if (k == KEY_ENV or _SECRET_NAME.match(k)) and len(v) >= 4}
    return sorted(found, key=len, reverse=True)


def redact(text: str, env: Mapping[str, str] | None = None) -> str:
    """``text`` with every secret of the environment, URL query (presigned URLs, SAS tokens)
    and URL user-info replaced by ``***``."""
    for secret in secrets_in(env):
        text = text.replace(secret, "***")
    text = _URL_USERINFO.sub(r"\1***@", text)
    return _URL_QUERY.sub(r"\1?***", text)
