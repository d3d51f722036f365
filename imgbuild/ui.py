"""What the user sees: plain lines off a terminal, a live view on one, JSON lines with --json.

All three render the same events and the same :class:`~imgbuild.plan.Decision` data.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from typing import IO, TYPE_CHECKING, Any

from .errors import one_line

if TYPE_CHECKING:
    from .summary import Summary
    from .plan import Decision

STATE_WIDTH = 9


def money(usd: float) -> str:
    return f"${usd:.2f}" if usd >= 0.01 or usd == 0 else f"${usd:.4f}"


def decision_rows(decisions: list[Decision], *, cost: bool = False) -> list[str]:
    """One line per target in aligned columns: name, state, [estimate,] reason."""
    width = max((len(d.name) for d in decisions), default=0)
    state_width = 8  # the longest state, `upstream`: the columns stay put from one run to the next
    costs = [f"~{money(d.estimate_usd)}" if d.estimate_usd else _free(d) for d in decisions] if cost else []
    cost_width = max(map(len, costs), default=0)
    rows = []
    for i, d in enumerate(decisions):
        cells = [f"{d.name:<{width}}", f"{d.state:<{state_width}}"]
        if cost_width:
            cells.append(f"{costs[i]:<{cost_width}}")
        cells.append(d.reason)
        rows.append("  ".join(cells).rstrip())
    return rows


def _free(d: Decision) -> str:
    """A derived target to be made: exactly nothing, whatever the prices (it is no request)."""
    return money(0.0) if d.derived and d.action in ("request", "wait") else ""


def summary_line(s: Summary) -> str:
    if not (s.built or s.restored or s.failed or s.skipped):
        head = f"nothing to do: {s.up_to_date} target(s) up to date"
    else:
        parts = [f"{s.built} built", f"{s.restored} restored"]
        if s.failed:
            parts.append(f"{s.failed} failed")
        if s.skipped:
            parts.append(f"{s.skipped} skipped")
        parts.append(f"{s.up_to_date} up to date")
        head = ", ".join(parts)
    tail = f"; {s.requests} request(s)"
    if s.retries:
        tail += f" ({s.retries} retries)"
    tail += f", {money(s.cost_usd)}"
    over = s.cost_usd - s.estimate_usd
    if over > max(0.0005, 0.01 * s.estimate_usd):  # not the noise of token counts
        tail += f" ({money(over)} over the estimate of {money(s.estimate_usd)})"
    if s.fetched:
        tail += f"; {s.fetched} image(s) from the remote cache"
    if s.uploaded is not None and (s.uploaded or s.built):
        tail += f"; {s.uploaded} uploaded to the remote cache"
    if s.interrupted:
        tail += "; interrupted"
    return head + tail


class Reporter:
    """Plain lines: one per event, for logs and pipes."""

    def __init__(self, out: IO[str] | None = None, err: IO[str] | None = None, quiet: bool = False) -> None:
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.quiet = quiet
        self._lock = threading.Lock()

    def _print(self, line: str, *, stream: IO[str] | None = None) -> None:
        with self._lock:
            print(one_line(line), file=stream or self.out, flush=True)

    def event(self, kind: str, name: str, detail: str = "", **fields: Any) -> None:
        if self.quiet and kind not in ("failed",):
            return
        line = f"{kind:<{STATE_WIDTH}} {name}"
        if kind == "failed":
            self._print(f"{kind:<{STATE_WIDTH}} {detail}", stream=self.err)
            return
        extras = []
        if detail:
            extras.append(detail)
        if fields.get("seconds") is not None:
            extras.append(f"{fields['seconds']:.1f}s")
        if fields.get("cost_usd"):
            extras.append(money(fields["cost_usd"]))
        if extras:
            line += "  (" + ", ".join(extras) + ")"
        self._print(line)

    def line(self, text: str, *, error: bool = False) -> None:
        """A line of the caller's own (watch's one line per rebuild, an error)."""
        self._print(text, stream=self.err if error else None)

    def warn(self, message: str) -> None:
        self._print(f"warning: {message}", stream=self.err)

    def plan(self, decisions: list[Decision], total_usd: float, *, dry_run: bool,
             real: tuple[str, float] | None = None) -> None:
        """The plan of ``build -n``. ``real``: under the placeholder, the manifest's own provider
        and what it would charge for the same requests (what the user is planning for)."""
        if not dry_run:
            return
        for row in decision_rows(decisions, cost=True):
            self._print(row)
        todo = sum(1 for d in decisions if d.action in ("request", "wait") and not d.derived)
        local = sum(1 for d in decisions if d.action in ("request", "wait") and d.derived)
        estimate = money(total_usd)
        if real is not None:
            estimate += f" with the placeholder ({real[0]} would charge ~{money(real[1])})"
        made = f" and {local} derived target(s) made locally, free" if local else ""
        self._print(f"plan: {todo} request(s) at most{made}, estimated {estimate}; nothing was done (-n)")

    def summary(self, s: Summary) -> None:
        self._print(summary_line(s))

    def close(self) -> None:
        pass


class JsonReporter(Reporter):
    """--json: one JSON object per line on stdout; the last is the summary."""

    def _emit(self, obj: dict[str, Any]) -> None:
        with self._lock:
            self.out.write(json.dumps(obj, sort_keys=True) + "\n")
            self.out.flush()

    def event(self, kind: str, name: str, detail: str = "", **fields: Any) -> None:
        self._emit({"event": kind, "target": name, "detail": detail,
                    **{k: v for k, v in fields.items() if v is not None}})

    def warn(self, message: str) -> None:
        self._emit({"event": "warning", "message": message})

    def plan(self, decisions: list[Decision], total_usd: float, *, dry_run: bool,
             real: tuple[str, float] | None = None) -> None:
        for d in decisions:
            self._emit({"event": "plan", **d.to_json()})
        estimate: dict[str, Any] = {"event": "estimate", "estimate_usd": round(total_usd, 6), "dry_run": dry_run}
        if real is not None:
            estimate.update(manifest_provider=real[0], manifest_provider_estimate_usd=round(real[1], 6))
        self._emit(estimate)

    def summary(self, s: Summary) -> None:
        self._emit({"event": "summary", **s.to_json()})


class LiveReporter(Reporter):
    """On a terminal: finished targets scroll by; targets in flight stay at the bottom with their
    elapsed time (a request takes 30-120 s)."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        from rich.console import Console
        from rich.live import Live

        self.console = Console(file=self.out, no_color=bool(os.environ.get("NO_COLOR")), highlight=False)
        self.in_flight: dict[str, float] = {}
        self._name_width = 0
        self.live = Live(console=self.console, get_renderable=self._render, refresh_per_second=4,
                         transient=True, redirect_stdout=False, redirect_stderr=False)
        self._started = False

    def _start(self) -> None:
        # Started with the first event, not before: a question asked before the build (confirm_above)
        # must not be repainted away.
        if not self._started:
            self._started = True
            self.live.start()

    def _render(self) -> Any:
        from rich.text import Text

        now = time.monotonic()
        # The widest name seen in flight: the columns do not jump as targets come and go.
        self._name_width = max(self._name_width, *map(len, self.in_flight), 0)
        width = self._name_width
        lines = [f"  {name:<{width}}  {now - t0:5.0f}s"
                 for name, t0 in sorted(self.in_flight.items(), key=lambda x: x[1])]
        if lines:
            lines.insert(0, f"in flight: {len(lines)}")
        return Text("\n".join(lines), style="dim")

    def _print(self, line: str, *, stream: IO[str] | None = None) -> None:
        self._start()
        style = "red" if line.startswith("failed") else "yellow" if line.startswith("warning") else None
        self.console.print(one_line(line), style=style, markup=False, highlight=False)

    def event(self, kind: str, name: str, detail: str = "", **fields: Any) -> None:
        self._start()
        if kind == "started":
            self.in_flight[name] = time.monotonic()
            self.live.refresh()
            return
        self.in_flight.pop(name, None)
        self.live.refresh()  # else the line prints above a stale view of what is in flight
        super().event(kind, name, detail, **fields)

    def landed(self, name: str) -> None:
        """Take a target off the in-flight view without printing a line for it."""
        self._start()
        self.in_flight.pop(name, None)
        self.live.refresh()

    def close(self) -> None:
        if self._started:
            self.live.stop()


class NullReporter(Reporter):
    """Says nothing: the library's default, so that a build script's own output stays its own."""

    def _print(self, line: str, *, stream: IO[str] | None = None) -> None:
        pass


def make_reporter(*, json_lines: bool, quiet: bool) -> Reporter:
    if json_lines:
        return JsonReporter()
    if sys.stdout.isatty() and not quiet and os.environ.get("TERM") != "dumb":
        return LiveReporter()
    return Reporter(quiet=quiet)
