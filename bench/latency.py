#!/usr/bin/env python3
"""Percentiles of mx2's final-dot-to-reply latency from a /metrics scrape.

    python3 bench/latency.py [/tmp/mxbench/mx2-metrics-last.txt]

The histogram's buckets are coarse, so each percentile is reported as the
upper bound of the bucket it falls in ("p99 <= 0.02 s").
"""
import re
import sys

path = sys.argv[1] if len(sys.argv) > 1 else "/tmp/mxbench/mx2-metrics-last.txt"
buckets = []
count = None
for line in open(path):
    m = re.match(r'mx2_accept_seconds_bucket\{le="([^"]+)"\} (\d+)', line)
    if m:
        buckets.append((float("inf") if m.group(1) == "+Inf" else float(m.group(1)), int(m.group(2))))
    m = re.match(r"mx2_accept_seconds_count (\d+)", line)
    if m:
        count = int(m.group(1))
if not count:
    sys.exit(f"no mx2_accept_seconds samples in {path}")
out = {"samples": count}
for p in (0.5, 0.9, 0.99, 0.999):
    need = p * count
    le = next(b for b, c in buckets if c >= need)
    out[f"p{p * 100:g}_le_s"] = le
print(out)
