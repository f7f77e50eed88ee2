"""``GET /metrics``: the Prometheus text exposition (format 0.0.4) of the hub and the web layer.

The hub's counters come from :meth:`pihub.hub.Hub.metrics` (a typed snapshot); the web
layer adds its own: HTTP responses by status, ``/hook`` calls by outcome, and the
process's resident memory and thread count.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Mapping
from typing import Any

__all__ = ["render"]


def _num(value: float) -> str:
    """A sample value in Prometheus text."""
    if isinstance(value, int):
        return str(value)
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    return repr(float(value))


def _label(value: str) -> str:
    """A label value escaped for the exposition format."""
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class _Exposition:
    """Collects metric families and renders the Prometheus text format."""

    def __init__(self) -> None:
        self._lines: list[str] = []

    def add(self, name: str, kind: str, help_text: str, samples: list[tuple[dict[str, str], float]]) -> None:
        """One family: ``# HELP``, ``# TYPE`` and a line per sample."""
        self._lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
        for labels, value in samples:
            self._lines.append(f"{name}{self._labels(labels)} {_num(value)}")

    def histogram(self, name: str, help_text: str, buckets: list[tuple[dict[str, str], float]],
                  total: float, count: int) -> None:
        """A histogram family: cumulative ``_bucket`` samples, ``_sum`` and ``_count``."""
        self._lines += [f"# HELP {name} {help_text}", f"# TYPE {name} histogram"]
        for labels, value in buckets:
            self._lines.append(f"{name}_bucket{self._labels(labels)} {_num(value)}")
        self._lines += [f"{name}_sum {_num(float(total))}", f"{name}_count {_num(count)}"]

    @staticmethod
    def _labels(labels: Mapping[str, str]) -> str:
        if not labels:
            return ""
        return "{" + ",".join(f'{k}="{_label(v)}"' for k, v in labels.items()) + "}"

    def text(self) -> str:
        """The exposition, newline-terminated."""
        return "\n".join(self._lines) + "\n"


def _rss_bytes() -> int | None:
    """Resident set size of this process in bytes (Linux), or None."""
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def render(m: Any, http_statuses: Mapping[int, int], webhooks: Mapping[str, int]) -> str:
    """The exposition.

    Args:
        m: the hub's :class:`pihub.hub.HubMetrics`.
        http_statuses: HTTP responses sent, by status code.
        webhooks: ``/hook`` calls by outcome (``replied``, ``unmatched``, ``failed``).

    Returns:
        The text, newline-terminated.
    """
    out = _Exposition()
    out.add("pihub_info", "gauge", "pihub version and device id",
            [({"version": m.version, "device_id": m.device_id}, 1)])
    bus = m.bus
    out.add("pihub_bus_published_total", "counter", "events accepted by the bus, per producer",
            [({"producer": n}, s.published) for n, s in bus.items()])
    out.add("pihub_bus_dropped_total", "counter", "events dropped because a producer's ring was full",
            [({"producer": n}, s.dropped) for n, s in bus.items()])
    out.add("pihub_bus_depth", "gauge", "events waiting in a producer's ring",
            [({"producer": n}, s.depth) for n, s in bus.items()])
    out.add("pihub_bus_capacity", "gauge", "events a producer's ring holds at most",
            [({"producer": n}, s.capacity) for n, s in bus.items()])
    st = m.dispatch
    out.add("pihub_dispatch_events_total", "counter", "events dispatched", [({}, st.events)])
    out.add("pihub_hooks_fired_total", "counter", "hook jobs queued", [({}, st.hooks_fired)])
    out.add("pihub_hooks_dropped_total", "counter", "hook jobs dropped (worker queue full)",
            [({}, st.hooks_dropped)])
    out.add("pihub_regex_timeouts_total", "counter", "condition regex matches given up (time bound; no match)",
            [({}, m.regex_timeouts)])
    out.add("pihub_bus_overflow_reports_total", "counter", "BusOverflowEvents published",
            [({}, st.overflow_reports)])
    out.add("pihub_hooks_inline_total", "counter", "hooks run on the dispatcher thread (non-blocking actions)",
            [({}, st.hooks_inline)])
    out.add("pihub_inline_overruns_total", "counter", "inline hooks that took their batch past engine.inline_budget",
            [({}, st.inline_overruns)])
    out.add("pihub_inline_deferred_total", "counter", "inline hooks sent to the workers (budget spent)",
            [({}, st.inline_deferred)])
    lat = m.latency
    cumulative, samples = 0, []
    for bound, count in zip(lat.bounds_us, lat.counts, strict=True):
        cumulative += count
        le = "+Inf" if math.isinf(bound) else _num(bound / 1e6)
        samples.append(({"le": le}, cumulative))
    out.histogram("pihub_dispatch_latency_seconds",
                  "event timestamp to hook job queued, in seconds", samples, lat.total_us / 1e6, lat.n)
    pool = m.pool
    out.add("pihub_pool_workers", "gauge", "worker threads", [({}, pool.workers)])
    out.add("pihub_pool_pending", "gauge", "jobs queued or running", [({}, pool.pending)])
    out.add("pihub_pool_completed_total", "counter", "jobs run", [({}, pool.completed)])
    out.add("pihub_pool_failed_total", "counter", "jobs that raised", [({}, pool.failed)])
    out.add("pihub_pool_rejected_total", "counter", "jobs refused (queue full)", [({}, pool.rejected)])
    out.add("pihub_http_requests_total", "counter", "HTTP responses sent, by status code",
            [({"code": str(code)}, count) for code, count in sorted(http_statuses.items())])
    out.add("pihub_webhooks_total", "counter", "/hook calls, by outcome",
            [({"outcome": k}, v) for k, v in sorted(webhooks.items())])
    out.add("pihub_websocket_clients", "gauge", "websocket clients connected", [({}, m.websocket_clients)])
    out.add("pihub_connections_refused_total", "counter", "connections closed at accept by a limit, by server",
            [({"server": k}, v) for k, v in sorted(m.connections_refused.items())])
    out.add("pihub_recent_events_bytes", "gauge", "bytes the recent events keep (estimated), by ring",
            [({"ring": k}, kept) for k, (kept, _) in sorted(m.recent_events.items())])
    out.add("pihub_recent_events_evicted_total", "counter",
            "recent events dropped for the byte budget (http.websocket_replay_bytes), by ring",
            [({"ring": k}, evicted) for k, (_, evicted) in sorted(m.recent_events.items())])
    rss = _rss_bytes()
    if rss is not None:
        out.add("process_resident_memory_bytes", "gauge", "resident set size, in bytes", [({}, rss)])
    out.add("process_threads", "gauge", "Python threads", [({}, threading.active_count())])
    return out.text()
