#!/bin/sh
# Bounded fuzzing of every cargo-fuzz target in fuzz/ (used by CI).
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#
# SECONDS per target (default 30). Each target starts from its seeds in
# fuzz/seeds/TARGET/ (kept in the repository: hand-written seeds only); what
# the run discovers goes to a scratch corpus that is thrown away, so the
# repository stays small. A crash leaves its input in fuzz/artifacts/TARGET/
# and makes this script exit non-zero. Prints the executions of each run.
#
# Needs the nightly toolchain (libFuzzer's sanitizer flags) and cargo-fuzz;
# cargo-fuzz is installed (`cargo install cargo-fuzz --locked`) when
# missing, a missing nightly is an error. Build output goes to
# $MX2_FUZZ_TARGET_DIR, else $CARGO_TARGET_DIR/fuzz, else fuzz/target.
set -eu

secs=${1:-30}
[ $# -gt 0 ] && shift
case $secs in
    '' | *[!0-9]*) echo "usage: $0 [SECONDS] [TARGET...]" >&2; exit 2 ;;
esac

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root/fuzz"

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    echo "fuzz.sh: the nightly toolchain is missing (rustup toolchain install nightly)" >&2
    exit 1
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: cargo-fuzz missing, installing it" >&2
    cargo install cargo-fuzz --locked
fi

target_dir=${MX2_FUZZ_TARGET_DIR:-${CARGO_TARGET_DIR:+$CARGO_TARGET_DIR/fuzz}}
target_dir=${target_dir:-$root/fuzz/target}
unset CARGO_TARGET_DIR

if [ $# -gt 0 ]; then
    targets=$*
else
    targets=$(cargo +nightly fuzz list)
fi

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT INT TERM

# One build for all targets (debug assertions on: overflow checks too).
# shellcheck disable=SC2086
for t in $targets; do
    cargo +nightly fuzz build -a --target-dir "$target_dir" "$t"
done

status=0
summary=""
for t in $targets; do
    mkdir -p "$scratch/$t" "$root/fuzz/artifacts/$t"
    seeds="$root/fuzz/seeds/$t"
    [ -d "$seeds" ] || seeds=""
    log="$scratch/$t.log"
    echo "== $t: ${secs}s"
    # shellcheck disable=SC2086
    if cargo +nightly fuzz run -a --target-dir "$target_dir" "$t" "$scratch/$t" $seeds -- \
        -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
        -print_final_stats=1 >"$log" 2>&1; then
        result=ok
    else
        result=FAILED
        status=1
        tail -n 60 "$log" >&2
    fi
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    [ -n "$runs" ] || runs=$(sed -n 's/^Done \([0-9]*\) runs.*/\1/p' "$log" | tail -n 1)
    cov=$(sed -n 's/.*cov: \([0-9]*\) ft: \([0-9]*\).*/cov \1 ft \2/p' "$log" | tail -n 1)
    line=$(printf '%-28s %-7s %12s execs in %ss  (%s, corpus %s entries)' \
        "$t" "$result" "${runs:-?}" "$secs" "${cov:-no coverage line}" \
        "$(find "$scratch/$t" -type f | wc -l)")
    echo "$line"
    summary="$summary$line
"
done

echo
echo "fuzz summary:"
printf '%s' "$summary"
exit $status
