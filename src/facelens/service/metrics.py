"""Prometheus text-format metrics, kept in-process (no client library needed for a few series)."""

from __future__ import annotations

import threading
from collections import defaultdict

# request-duration buckets in seconds: face work takes tens to hundreds of milliseconds
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: dict[str, float] = defaultdict(float)
        self._requests: dict[tuple[str, str, str], int] = defaultdict(int)
        self._hist: dict[tuple[str, str], list[float]] = {}
        self._sums: dict[tuple[str, str], float] = defaultdict(float)

    def count(self, name: str, value: float = 1.0) -> None:
        with self._lock:
            self._counters[name] += value

    def observe(self, method: str, path: str, status: int, seconds: float) -> None:
        with self._lock:
            self._requests[(method, path, str(status))] += 1
            key = (method, path)
            counts = self._hist.setdefault(key, [0.0] * (len(BUCKETS) + 1))
            for i, bound in enumerate(BUCKETS):
                if seconds <= bound:
                    counts[i] += 1
            counts[-1] += 1
            self._sums[key] += seconds

    def render(self) -> str:
        with self._lock:
            lines = ["# HELP facelens_http_requests_total HTTP requests by method, route and status.",
                     "# TYPE facelens_http_requests_total counter"]
            for (method, path, status), n in sorted(self._requests.items()):
                lines.append(f'facelens_http_requests_total{{method="{method}",path="{path}",status="{status}"}} {n}')
            lines += ["# HELP facelens_http_request_seconds Request duration.",
                      "# TYPE facelens_http_request_seconds histogram"]
            for (method, path), counts in sorted(self._hist.items()):
                labels = f'method="{method}",path="{path}"'
                for bound, n in zip(BUCKETS, counts, strict=False):
                    lines.append(f'facelens_http_request_seconds_bucket{{{labels},le="{bound}"}} {n:g}')
                lines.append(f'facelens_http_request_seconds_bucket{{{labels},le="+Inf"}} {counts[-1]:g}')
                lines.append(f"facelens_http_request_seconds_sum{{{labels}}} {self._sums[(method, path)]:.6f}")
                lines.append(f"facelens_http_request_seconds_count{{{labels}}} {counts[-1]:g}")
            for name, value in sorted(self._counters.items()):
                lines += [f"# TYPE {name} counter", f"{name} {value:g}"]
            return "\n".join(lines) + "\n"
