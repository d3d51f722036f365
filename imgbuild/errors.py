"""The error tree. The library raises these; the CLI prints ``str(error)`` as one line.

    ImgbuildError                     exit 1 unless said otherwise
    ├── UsageError                    exit 2: bad command line or environment
    │   └── MissingKey                the provider's key variable is not set
    ├── ManifestError                 exit 2: every problem of images.toml, each with its place
    ├── StateFileError                exit 2: a lock/state file we cannot read (e.g. newer format)
    ├── UnsafePath                    exit 2: a write or read would leave the project or the cache
    ├── ProjectBusy                   another build holds the project's run lock
    ├── BudgetExceeded                the estimate or the spend would pass --max-cost
    ├── BuildFailed                   one or more targets failed (details already reported)
    ├── Interrupted                   exit 130
    └── ProviderError                 one request went wrong; carries the target name
        ├── RequestRejected           400: invalid request or moderation block; never retried
        ├── AuthenticationError       401/403/missing key: stops the whole build
        ├── EndpointNotFound          404: the base URL is wrong
        └── TransientError            worth retrying (up to max_retries)
            ├── RateLimited           429, with retry_after_s when the server says
            ├── ServerError           5xx
            ├── NetworkError          timeouts, resets, refused connections
            └── BadResponse           truncated body, bad base64, undecodable image
"""

from __future__ import annotations

from dataclasses import dataclass


# Control characters (C0, DEL, C1) and the bidirectional overrides, as Python writes them in a
# string literal: whatever a manifest, a file name or a server says stays on one line and cannot
# move the cursor, clear the screen or reorder what the line shows.
_ESCAPES = {c: repr(chr(c))[1:-1] for c in (*range(0x20), *range(0x7F, 0xA0))}
_ESCAPES.update({c: f"\\u{c:04x}" for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x2028, 0x2029)})


def one_line(text: str) -> str:
    """``text`` with every control character escaped (a newline becomes the two characters
    backslash and n): one printed line, which cannot repaint the terminal."""
    return text.translate(_ESCAPES)


class ImgbuildError(Exception):
    exit_code = 1

    def __init__(self, message: str = "") -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class UsageError(ImgbuildError):
    exit_code = 2


class MissingKey(UsageError):
    pass


@dataclass(frozen=True)
class Problem:
    """One mistake in the manifest: where (``images.hero.size``) and what."""

    where: str
    message: str

    def render(self, manifest_name: str) -> str:
        place = f"{manifest_name}: {self.where}" if self.where else manifest_name
        return one_line(f"{place}: {self.message}")


class ManifestError(ImgbuildError):
    exit_code = 2

    def __init__(self, manifest_name: str, problems: list[Problem]) -> None:
        self.manifest_name = manifest_name
        self.problems = problems
        super().__init__("\n".join(p.render(manifest_name) for p in problems))


class StateFileError(ImgbuildError):
    exit_code = 2


class UnsafePath(ImgbuildError):
    """A folder on the way to a file leads out of the project or the cache (a symlink, or one
    swapped in during the build): nothing is written or read through it."""

    exit_code = 2


class ProjectBusy(ImgbuildError):
    pass


class BudgetExceeded(ImgbuildError):
    pass


class BuildFailed(ImgbuildError):
    pass


class Interrupted(ImgbuildError):
    exit_code = 130


class ProviderError(ImgbuildError):
    """A request for one target failed. ``target`` is filled in by the engine if the provider
    did not know it."""

    retryable = False
    fatal = False  # stops the whole build (a bad key fails every request alike)

    def __init__(self, message: str, *, target: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.target = target
        self.status = status
        # What the failed attempt cost in HTTP requests that reached the API (they may be billed).
        self.requests = 0
        self.retries = 0
        self.cost_usd: float | None = None  # what the requests that did succeed cost

    def __str__(self) -> str:
        return f"{self.target}: {self.message}" if self.target else self.message


class RequestRejected(ProviderError):
    pass


class AuthenticationError(ProviderError):
    fatal = True


class EndpointNotFound(ProviderError):
    fatal = True


class TransientError(ProviderError):
    retryable = True

    def __init__(self, message: str, *, retry_after_s: float | None = None, **kw: object) -> None:
        super().__init__(message, **kw)  # type: ignore[arg-type]
        self.retry_after_s = retry_after_s  # the server's Retry-After, when it sent one


class RateLimited(TransientError):
    pass


class ServerError(TransientError):
    pass


class NetworkError(TransientError):
    pass


class BadResponse(TransientError):
    pass
