"""What went wrong with the remote, in one short line that never shows a secret.

Every foreign error (obstore's, the OS's, a timeout) is turned into a :class:`Failure` here and
nowhere else. obstore's messages are long and multi-line (``Error performing GET <url> in 3ms,
after 2 retries … - Server returned non-2xx status code: 403 Forbidden: <body>`` and a debug
dump); we keep the part after the last `` - `` that says what happened, without the body.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

KEY_ENV = "IMGBUILD_CACHE_KEY"

# Variables of the stores' usual environments whose values are secrets (or may be).
_SECRET_NAME = re.compile(r"^(AWS|AZURE|ARM|GOOGLE|GCS|GCP)_\w*(SECRET|KEY|TOKEN|PASSWORD|SAS|"
                          r"CREDENTIAL)\w*$")
_URL_QUERY = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^\s?#]*)[?#][^\s]*", re.IGNORECASE)
_URL_USERINFO = re.compile(r"(\b[a-z][a-z0-9+.-]*://)[^\s/@]+@", re.IGNORECASE)
_STATUS = re.compile(r"status code: (\d{3})(?: ([A-Za-z][A-Za-z ]*[A-Za-z]))?")
_OFFLINE_HINTS = ("error sending request", "connection refused", "connect", "timed out",
                  "timeout", "dns error", "connection reset", "broken pipe", "unexpected eof")


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


@dataclass(frozen=True)
class Failure:
    """One failed remote operation: what happened, and whether the store is out of reach
    (then nothing more is tried this run) or only refused this one kind of operation."""

    reason: str
    unreachable: bool


def describe(exc: BaseException, timeout_s: float) -> Failure:
    """Translate a foreign error into a :class:`Failure` (not yet redacted)."""
    from obstore.exceptions import PermissionDeniedError, UnauthenticatedError

    if isinstance(exc, TimeoutError):
        return Failure(f"no answer within {timeout_s:g} s", unreachable=True)
    if isinstance(exc, PermissionDeniedError):
        return Failure("refused: permission denied (HTTP 403)", unreachable=False)
    if isinstance(exc, UnauthenticatedError):
        return Failure("refused: not authenticated (HTTP 401); check the store's credentials",
                       unreachable=False)
    text = str(exc)
    first = text.splitlines()[0] if text else type(exc).__name__
    status = _STATUS.search(first)
    if status:
        code, phrase = status.group(1), status.group(2) or ""
        return Failure(f"HTTP {code} {phrase}".rstrip(), unreachable=False)
    detail = first.rsplit(" - ", 1)[-1].strip()
    if isinstance(exc, OSError) and exc.strerror:
        detail = exc.strerror
    low = first.lower()
    unreachable = any(hint in low for hint in _OFFLINE_HINTS)
    if unreachable and "error sending request" in low:
        detail = "unreachable (no connection, or no answer in time)"
    return Failure(_clip(detail), unreachable)


def _clip(text: str, limit: int = 160) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
