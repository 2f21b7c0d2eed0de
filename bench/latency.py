#!/usr/bin/env python3
"""Percentiles of mx2's final-dot-to-reply latency from a /metrics scrape.

    python3 bench/latency.py [SCRAPE]

Without an argument it reads the scrape with the most samples among
$BENCH_TMP/mx2-metrics-*.txt (the accept scenario's).

The histogram's buckets are coarse, so each percentile is reported as the
upper bound of the bucket it falls in ("p99 <= 0.02 s").
"""
import glob
import os
import re
import sys


def read(path):
    buckets, count = [], 0
    for line in open(path):
        m = re.match(r'mx2_accept_seconds_bucket\{le="([^"]+)"\} (\d+)', line)
        if m:
            le = float("inf") if m.group(1) == "+Inf" else float(m.group(1))
            buckets.append((le, int(m.group(2))))
        m = re.match(r"mx2_accept_seconds_count (\d+)", line)
        if m:
            count = int(m.group(1))
    return buckets, count


if len(sys.argv) > 1:
    path = sys.argv[1]
else:
    tmp = os.environ.get("BENCH_TMP", "/tmp/mxbench")
    scrapes = glob.glob(os.path.join(tmp, "mx2-metrics-*.txt"))
    if not scrapes:
        sys.exit(f"no scrapes in {tmp}")
    # most samples (the accept scenario); the newest of those
    path = max(scrapes, key=lambda p: (read(p)[1], os.path.getmtime(p)))
buckets, count = read(path)
if not count:
    sys.exit(f"no mx2_accept_seconds samples in {path}")
out = {"scrape": path, "samples": count}
for p in (0.5, 0.9, 0.99, 0.999):
    need = p * count
    le = next(b for b, c in buckets if c >= need)
    out[f"p{p * 100:g}_le_s"] = le
print(out)
