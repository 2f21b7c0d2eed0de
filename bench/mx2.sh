#!/usr/bin/env bash
# mx2 as a backup-MX relay for example.jp, for the side-by-side rig in
# ../shared/bench (see bench/README.md):
#
#   ../shared/bench/run.sh bench/mx2.sh [scenarios…]
#   mx2.sh start|stop|flush|pids|queue|version PORT PRIMARY_PORT
#
# Configured from scratch under $BENCH_TMP/mx2-PORT: listens on
# 127.0.0.1:PORT only, relays example.jp to [127.0.0.1]:PRIMARY_PORT, the
# operator's header_checks. No DNS: the transport uses an IP literal.
# Durability: the 250 to DATA waits for the SQLite commit (synchronous=FULL).
set -euo pipefail
ACTION=${1:?usage: mx2.sh start|stop|flush|pids|queue|version PORT PRIMARY_PORT}
PORT=${2:-10025}
PRIMARY_PORT=${3:-10026}
BENCH_TMP=${BENCH_TMP:-/tmp/mxbench}
HERE=$(cd "$(dirname "$0")/.." && pwd)
MX2=${MX2_BIN:-$HERE/target/release/mx2}
D=$BENCH_TMP/mx2-$PORT
CFG=$D/mx2.toml
# /metrics on PORT+1000; scraped at stop into $BENCH_TMP/mx2-metrics-last.txt
# and a timestamped copy (bench/latency.py reads the `.`→250 latency
# histogram; give it the accept scenario's copy, the one with most samples).
METRICS_PORT=$((PORT + 1000))

pid() {
  [ -r "$D/pid" ] || return 1
  local p; p=$(cat "$D/pid")
  [ -n "$p" ] && kill -0 "$p" 2>/dev/null && echo "$p"
}

case "$ACTION" in
  start)
    "$0" stop "$PORT" "$PRIMARY_PORT" >/dev/null 2>&1 || true
    [ -x "$MX2" ] || (cd "$HERE" && cargo build --release --quiet)
    rm -rf "$D"; mkdir -p "$D"
    printf 'example.jp\tsmtp:[127.0.0.1]:%s\n' "$PRIMARY_PORT" > "$D/transport.map"
    cat > "$D/header_checks" <<'RULES'
/^From:\s*<>/m                  DISCARD
/^X\-Spam\-Flag:\s+YES/m        DISCARD
/^X\-Virus\-Status:\s+Yes/m     DISCARD
/^X\-Spam\-Level:/m             IGNORE
/^X\-Spam\-Checker\-Version:/m  IGNORE
/^X\-Spam\-Status:\s+No/m       IGNORE
/^X\-Virus\-Scanned:/m          IGNORE
/^X\-Virus\-Status:\s+Clean/m   IGNORE
RULES
    cat > "$CFG" <<CONF
hostname = "mx2.bench.invalid"
[smtp]
listen = ["127.0.0.1:$PORT"]
max_connections = 20000
max_connections_per_ip = 20000
[queue]
path = "queue.db"
# short retry so drain tests are fair (Postfix gets 10s/60s in the rig)
min_backoff = "10s"
max_backoff = "60s"
[relay]
transport_map = "transport.map"
header_checks = "header_checks"
tls = "none"
[metrics]
listen = "127.0.0.1:$METRICS_PORT"
CONF
    "$MX2" check-config --config "$CFG" >"$D/check.log" 2>&1 || { cat "$D/check.log" >&2; exit 1; }
    nohup "$MX2" serve --config "$CFG" >"$D/mx2.log" 2>&1 &
    echo $! > "$D/pid"
    for _ in $(seq 100); do pid >/dev/null && break; sleep 0.1; done
    pid >/dev/null || { echo "mx2 did not start" >&2; cat "$D/mx2.log" >&2; exit 1; }
    ;;
  stop)
    if p=$(pid); then
      python3 - "$METRICS_PORT" > "$BENCH_TMP/mx2-metrics-last.txt" 2>/dev/null <<'PY' || true
import sys, urllib.request
print(urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/metrics", timeout=5).read().decode())
PY
      # keep every scrape: the accept scenario's is the one with the most samples
      cp "$BENCH_TMP/mx2-metrics-last.txt" "$BENCH_TMP/mx2-metrics-$(date +%s%N).txt" 2>/dev/null || true
      kill -TERM "$p" 2>/dev/null || true
      for _ in $(seq 300); do pid >/dev/null || break; sleep 0.1; done
      if p=$(pid); then kill -KILL "$p" 2>/dev/null || true; fi
    fi
    ;;
  flush)
    "$MX2" queue flush --config "$CFG" >/dev/null
    ;;
  pids)
    pid
    ;;
  queue)
    # "TOTAL INFLIGHT": queued messages, and those not parked (held or deferred).
    sqlite3 -readonly -cmd ".timeout 5000" "$D/queue.db" "
      SELECT count(*), count(*) - sum(held OR EXISTS (SELECT 1 FROM recipients r WHERE r.msg_id = m.id AND r.status = 'deferred'))
      FROM messages m;" 2>/dev/null | tr '|' ' ' | awk '{print $1, ($2 == "" ? 0 : $2)}' || echo "0 0"
    ;;
  version)
    echo "$("$MX2" --version) (rust $(rustc --version | cut -d' ' -f2))"
    ;;
  *)
    echo "unknown action $ACTION" >&2; exit 2 ;;
esac
