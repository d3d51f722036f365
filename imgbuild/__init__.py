"""imgbuild: a make-like build system for AI-generated images.

The public API is this short list; everything is imported on first use, so that importing
imgbuild (and running ``imgbuild --help``) stays fast.
"""

from __future__ import annotations

import importlib

TYPE_CHECKING = False  # not typing's: importing typing costs every start ~5 ms

__version__ = "0.1.0"

_EXPORTS = {
    "Project": "project",
    "Plan": "project",
    "load_project": "project",
    "BuildOptions": "executor",
    "Summary": "executor",
    "Decision": "plan",
    "State": "plan",
    "Action": "plan",
    "Target": "resolve",
    "Spec": "spec",
    "LocalCache": "cache",
    "Reporter": "ui",
    "JsonReporter": "ui",
    "LiveReporter": "ui",
    "NullReporter": "ui",
    "ImgbuildError": "errors",
    "ManifestError": "errors",
    "ProviderError": "errors",
    "UsageError": "errors",
    "json_schema": "manifest",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from typing import Any

    from .cache import LocalCache
    from .errors import ImgbuildError, ManifestError, ProviderError, UsageError
    from .executor import BuildOptions, Summary
    from .manifest import json_schema
    from .plan import Action, Decision, State
    from .project import Plan, Project, load_project
    from .resolve import Target
    from .spec import Spec
    from .ui import JsonReporter, LiveReporter, NullReporter, Reporter


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'imgbuild' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*__all__, "__version__"])
