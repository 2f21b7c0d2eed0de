#!/usr/bin/env bash
# Package check, run by .ci/run as root on a Debian machine:
#
#   build the .deb (release) -> dpkg -i -> check files, conffiles, user,
#   permissions, check-config on the installed config -> run the installed
#   binary as the mx2 user on a test port, relay one message through it to
#   smtp-sink with the installed header_checks -> reinstall, remove, purge
#   -> check nothing is left.
#
# Idempotent: an old install is purged first, and everything it started is
# stopped and the package purged again on exit, whatever happened. Never
# listens on port 25: the daemon gets a copy of the installed config with a
# loopback test port. Needs swaks and Postfix's smtp-sink (.ci/run installs
# them). Every wait is bounded.
set -euo pipefail
cd "$(dirname "$0")/.."

T0=$SECONDS
export DEBIAN_FRONTEND=noninteractive
say() { printf 'packaging: %s\n' "$*"; }
fail() {
    printf 'packaging: FAIL: %s\n' "$*" >&2
    exit 1
}

[ "$(id -u)" = 0 ] || fail "must run as root (dpkg -i)"
for tool in swaks /usr/sbin/smtp-sink runuser dpkg stat; do
    command -v "$tool" >/dev/null || fail "missing $tool"
done

WORK=$(mktemp -d /tmp/mx2-pkg-ci.XXXXXX)
chmod 755 "$WORK"
MX2_PID=""
RUNUSER_PID=""
SINK_PID=""

purge() {
    if dpkg-query -W -f='${Status}' mx2 2>/dev/null | grep -qv 'not-installed'; then
        dpkg --purge mx2 >/dev/null
    fi
}

cleanup() {
    local rc=$?
    for p in $MX2_PID $RUNUSER_PID $SINK_PID; do
        kill "$p" 2>/dev/null || true
    done
    for p in $RUNUSER_PID $SINK_PID; do
        wait "$p" 2>/dev/null || true
    done
    if [ $rc -ne 0 ] && [ -s "$WORK/mx2.log" ]; then
        echo "--- last lines of the daemon's log:" >&2
        tail -n 30 "$WORK/mx2.log" >&2
    fi
    purge || true
    rm -rf /run/mx2 "$WORK"
    if [ $rc -ne 0 ]; then
        say "failed after $((SECONDS - T0)) s"
    fi
    exit $rc
}
trap cleanup EXIT

# want DESCRIPTION EXPECTED ACTUAL
want() {
    [ "$2" = "$3" ] || fail "$1: expected '$2', got '$3'"
}

# has DESCRIPTION NEEDLE ACTUAL: ACTUAL contains NEEDLE
has() {
    case "$3" in *"$2"*) ;; *) fail "$1: expected to contain '$2', got '$3'" ;; esac
}

# wait_for SECONDS DESCRIPTION COMMAND... (polls every 0.2 s)
wait_for() {
    local limit=$1 what=$2
    shift 2
    local end=$((SECONDS + limit))
    until "$@" >/dev/null 2>&1; do
        [ $SECONDS -lt $end ] || fail "timed out after ${limit}s waiting for $what"
        sleep 0.2
    done
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

free_port() {
    local p
    for _ in $(seq 1 50); do
        p=$((20000 + RANDOM % 30000))
        port_open "$p" || {
            echo "$p"
            return 0
        }
    done
    fail "no free port"
}

# ---- 0. a clean slate ------------------------------------------------------
if dpkg-query -W -f='${Status}' mx2 2>/dev/null | grep -qv 'not-installed'; then
    say "purging an earlier install"
    purge
fi
[ ! -e /usr/bin/mx2 ] || fail "/usr/bin/mx2 exists but no mx2 package is installed"

# ---- 1. build --------------------------------------------------------------
say "building the package"
deb=$(packaging/build-deb.sh)
say "built $deb ($(du -h "$deb" | cut -f1)) in $((SECONDS - T0)) s"
dpkg-deb --info "$deb" >"$WORK/info"
grep -q '^ Package: mx2$' "$WORK/info" || fail "control: no Package: mx2"
grep -q '^ Depends: .*adduser' "$WORK/info" || fail "control: Depends lacks adduser"
dpkg-deb --contents "$deb" >"$WORK/contents"
for f in ./usr/bin/mx2 ./etc/mx2/mx2.toml ./etc/mx2/transport.map ./etc/mx2/header_checks \
    ./lib/systemd/system/mx2.service ./usr/share/man/man8/mx2.8.gz \
    ./usr/share/man/man8/mx2-queue-list.8.gz ./usr/share/man/man5/mx2.toml.5.gz \
    ./usr/share/doc/mx2/copyright; do
    grep -q " $f\$" "$WORK/contents" || fail "package lacks $f"
done
if grep -qE '\.[0-9]$' <(grep -o '/usr/share/man/[^ ]*$' "$WORK/contents"); then
    fail "uncompressed man page in the package"
fi

# ---- 2. install --------------------------------------------------------------
say "installing"
dpkg -i "$deb" >"$WORK/dpkg-i.log" 2>&1 || {
    cat "$WORK/dpkg-i.log" >&2
    fail "dpkg -i"
}
want "package status" "install ok installed" "$(dpkg-query -W -f='${Status}' mx2)"

# files, owners, modes
want "/usr/bin/mx2" "755 root root" "$(stat -c '%a %U %G' /usr/bin/mx2)"
for f in mx2.toml transport.map header_checks; do
    want "/etc/mx2/$f" "644 root root" "$(stat -c '%a %U %G' /etc/mx2/$f)"
    cmp -s "packaging/etc/$f" "/etc/mx2/$f" || fail "/etc/mx2/$f differs from packaging/etc/$f"
done
want "/lib/systemd/system/mx2.service" "644 root" "$(stat -c '%a %U' /lib/systemd/system/mx2.service)"
for m in man8/mx2.8.gz man5/mx2.toml.5.gz; do
    gzip -t "/usr/share/man/$m" || fail "/usr/share/man/$m is not gzip"
done
if command -v groff >/dev/null; then
    for m in /usr/share/man/man8/mx2.8.gz /usr/share/man/man5/mx2.toml.5.gz; do
        warn=$(zcat "$m" | groff -man -Tutf8 -ww -z 2>&1 || true)
        [ -z "$warn" ] || fail "groff warnings in $m: $warn"
    done
fi
conffiles=$(dpkg-query -W -f='${Conffiles}\n' mx2)
for f in /etc/mx2/mx2.toml /etc/mx2/transport.map /etc/mx2/header_checks; do
    grep -q " $f " <<<"$conffiles" || fail "$f is not a conffile"
done

# the system user and its state directory
pw=$(getent passwd mx2) || fail "no mx2 user"
IFS=: read -r _ _ uid gid _ home shell <<<"$pw"
[ "$uid" -lt 1000 ] || fail "mx2 is not a system user (uid $uid)"
want "mx2 home" /var/lib/mx2 "$home"
want "mx2 shell" /usr/sbin/nologin "$shell"
want "mx2 group" mx2 "$(getent group "$gid" | cut -d: -f1)"
want "/var/lib/mx2" "750 mx2 mx2" "$(stat -c '%a %U %G' /var/lib/mx2)"
# A queue command run as root before the daemon ever ran must not create
# the database (root-owned, the daemon could not write it): it reports an
# empty queue and leaves /var/lib/mx2 alone.
out=$(env -u MX2_CONFIG mx2 queue list 2>&1) || fail "mx2 queue list (root, daemon never started): $out"
[ ! -e /var/lib/mx2/queue.db ] || fail "a root queue list created /var/lib/mx2/queue.db"
say "installed: files, conffiles, user mx2 (uid $uid), /var/lib/mx2 ok"

# the unit (systemd-analyze works without systemd running)
if command -v systemd-analyze >/dev/null; then
    # (It also runs man(1) for each Documentation= page, when man is there.)
    manopt=--man=yes
    command -v man >/dev/null || manopt=--man=no
    systemd-analyze verify "$manopt" /lib/systemd/system/mx2.service >"$WORK/verify" 2>&1 || {
        cat "$WORK/verify" >&2
        fail "systemd-analyze verify"
    }
    score=$(systemd-analyze security --offline=yes /lib/systemd/system/mx2.service 2>/dev/null |
        sed -n 's/.*Overall exposure level for mx2.service: \([0-9.]*\).*/\1/p')
    say "systemd-analyze verify ok; security exposure ${score:-n/a}"
fi

# ---- 3. the installed config -------------------------------------------------
# A public MX (port 25) needs a fully qualified hostname: on a machine whose
# name has no dot, check-config says so until the admin sets `hostname`.
if ! hostname | grep -q '\.'; then
    if out=$(env -u MX2_CONFIG mx2 check-config 2>&1); then
        fail "check-config accepted the short hostname $(hostname) on port 25: $out"
    fi
    has "check-config (short hostname)" "is not a fully qualified domain name" "$out"
    sed -i 's|^# hostname = "".*|hostname = "mx2.ci-test.example"|' /etc/mx2/mx2.toml
    grep -q '^hostname = "mx2.ci-test.example"' /etc/mx2/mx2.toml ||
        fail "installed config: no commented hostname line to set"
    say "short hostname refused on port 25; set hostname as the admin would"
fi
# stdout: which header rules are in force, then the verdict; nothing on stderr.
out=$(env -u MX2_CONFIG mx2 check-config 2>&1) || fail "mx2 check-config: $out"
has "check-config (default path, root)" "header_checks: /etc/mx2/header_checks" "$out"
want "check-config (default path, root)" "/etc/mx2/mx2.toml: ok" "$(printf '%s\n' "$out" | tail -n 1)"
want "check-config (no warnings)" 2 "$(printf '%s\n' "$out" | wc -l)"
out=$(runuser -u mx2 -- env -u MX2_CONFIG /usr/bin/mx2 check-config 2>&1) ||
    fail "mx2 check-config as mx2: $out"
want "check-config (as mx2)" "/etc/mx2/mx2.toml: ok" "$(printf '%s\n' "$out" | tail -n 1)"
[ -z "$(env -u MX2_CONFIG mx2 transport list)" ] || fail "the sample transport map is not empty"
say "check-config passes on the installed config"

# the installed rules, unmodified, on a scanned message
printf 'From: a@example.net\nX-Spam-Status: No, score=0.1\n\trequired=5.0\nX-Spam-Level: *\nX-Virus-Scanned: clamav\nSubject: hi\n\nbody\n' >"$WORK/msg"
env -u MX2_CONFIG mx2 header-checks test "$WORK/msg" >"$WORK/msg.out" 2>/dev/null
printf 'From: a@example.net\nSubject: hi\n\nbody\n' | cmp -s - "$WORK/msg.out" ||
    fail "installed header_checks: unexpected result: $(cat "$WORK/msg.out")"
printf 'X-Spam-Flag: YES\nSubject: spam\n\nbody\n' >"$WORK/spam"
grep -q '^DISCARD' <(env -u MX2_CONFIG mx2 header-checks test "$WORK/spam" 2>/dev/null) ||
    fail "installed header_checks: X-Spam-Flag: YES not discarded"

# ---- 4. run it as mx2 and relay one message ----------------------------------
PORT=$(free_port)
SINKPORT=$(free_port)
[ "$PORT" != "$SINKPORT" ] || SINKPORT=$((PORT + 1))

mkdir -p "$WORK/sink"
chown nobody "$WORK/sink"
/usr/sbin/smtp-sink -u nobody -d "$WORK/sink/%M." "127.0.0.1:$SINKPORT" 10 &
SINK_PID=$!
wait_for 10 "smtp-sink on $SINKPORT" port_open "$SINKPORT"

env -u MX2_CONFIG mx2 transport add ci-test.example "[127.0.0.1]:$SINKPORT" >/dev/null
env -u MX2_CONFIG mx2 transport lookup bob@ci-test.example >/dev/null ||
    fail "transport lookup after transport add"
want "transport.map after edit" "644 root root" "$(stat -c '%a %U %G' /etc/mx2/transport.map)"

# The installed config, only the listen address changed; /run/mx2 as
# systemd's RuntimeDirectory= would make it.
grep -q '^listen = \["0.0.0.0:25", "\[::\]:25"\]' /etc/mx2/mx2.toml ||
    fail "installed config: unexpected listen line"
sed "s|^listen = .*|listen = [\"127.0.0.1:$PORT\"]|" /etc/mx2/mx2.toml >"$WORK/mx2.toml"
chmod 644 "$WORK/mx2.toml"
install -d -o mx2 -g mx2 -m 750 /run/mx2

(cd / && exec runuser -u mx2 -- /usr/bin/mx2 serve --config "$WORK/mx2.toml") >"$WORK/mx2.log" 2>&1 &
RUNUSER_PID=$!
wait_for 20 "mx2 on port $PORT" port_open "$PORT"
# runuser forks mx2 and waits for it (or, in some versions, execs it).
mx2_pid() {
    if [ "$(ps -o comm= -p "$RUNUSER_PID")" = mx2 ]; then
        echo "$RUNUSER_PID"
    else
        pgrep -P "$RUNUSER_PID" -x mx2
    fi
}
wait_for 5 "the mx2 process" mx2_pid
MX2_PID=$(mx2_pid)
want "daemon user" mx2 "$(ps -o user= -p "$MX2_PID" | tr -d ' ')"
want "queue.db owner" "mx2 mx2" "$(stat -c '%U %G' /var/lib/mx2/queue.db)"
want "control socket" "600 mx2" "$(stat -c '%a %U' /run/mx2/control.sock)"

swaks --server "127.0.0.1:$PORT" --timeout 20 --from alice@example.net \
    --to bob@ci-test.example --header 'Subject: packaging ci' \
    --header 'X-Spam-Level: **' --header 'X-Virus-Scanned: clamav' \
    --body 'relayed by the installed mx2' >"$WORK/swaks.log" 2>&1 ||
    fail "swaks: $(tail -n 5 "$WORK/swaks.log")"
if swaks --server "127.0.0.1:$PORT" --timeout 20 --to eve@not-relayed.example \
    >"$WORK/swaks-denied.log" 2>&1; then
    fail "mail for a domain not in the transport map was accepted"
fi
grep -q '554 5.7.1' "$WORK/swaks-denied.log" || fail "no 554 5.7.1 for a non-relay domain"

delivered() { grep -lq 'relayed by the installed mx2' "$WORK"/sink/* 2>/dev/null; }
wait_for 60 "delivery to smtp-sink" delivered
dump=$(grep -l 'relayed by the installed mx2' "$WORK"/sink/*)
grep -q 'bob@ci-test.example' "$dump" || fail "relayed message lacks the recipient"
grep -q '^Subject: packaging ci' "$dump" || fail "relayed message lacks its Subject"
! grep -qi '^X-Spam-Level:\|^X-Virus-Scanned:' "$dump" || fail "header_checks IGNORE not applied"
grep -q '^Received: ' "$dump" || fail "no Received: header"
queue_empty() { [ "$(env -u MX2_CONFIG mx2 queue list --json | tr -d ' \n')" = "[]" ]; }
wait_for 20 "an empty queue" queue_empty
wait_for 10 "status=sent in the log" grep -q 'status=sent' "$WORK/mx2.log"
say "relayed through the installed mx2 (running as mx2) to smtp-sink"

# SIGHUP (ExecReload) keeps it running; SIGTERM stops it with exit 0.
kill -HUP "$MX2_PID"
sleep 1
kill -0 "$MX2_PID" || fail "mx2 died on SIGHUP"
port_open "$PORT" || fail "mx2 stopped listening after SIGHUP"
kill -TERM "$MX2_PID"
end=$((SECONDS + 30))
while kill -0 "$RUNUSER_PID" 2>/dev/null; do
    [ $SECONDS -lt $end ] || fail "mx2 did not stop within 30 s of SIGTERM"
    sleep 0.2
done
rc=0
wait "$RUNUSER_PID" || rc=$?
RUNUSER_PID="" MX2_PID=""
want "exit status after SIGTERM" 0 "$rc"
kill "$SINK_PID" 2>/dev/null || true
wait "$SINK_PID" 2>/dev/null || true
SINK_PID=""
rm -rf /run/mx2
say "SIGHUP reload and SIGTERM stop ok"

# ---- 5. reinstall, remove, purge ----------------------------------------------
dpkg -i "$deb" >"$WORK/dpkg-re.log" 2>&1 || {
    cat "$WORK/dpkg-re.log" >&2
    fail "reinstall (postinst configure with an old version)"
}
grep -q ci-test.example /etc/mx2/transport.map || fail "reinstall replaced the edited transport.map"
want "/var/lib/mx2 after reinstall" "750 mx2 mx2" "$(stat -c '%a %U %G' /var/lib/mx2)"

dpkg --remove mx2 >/dev/null
[ ! -e /usr/bin/mx2 ] || fail "/usr/bin/mx2 left after remove"
[ -f /etc/mx2/mx2.toml ] || fail "remove deleted the conffiles"
[ -f /var/lib/mx2/queue.db ] || fail "remove deleted the queue"

dpkg --purge mx2 >/dev/null
for p in /usr/bin/mx2 /etc/mx2 /var/lib/mx2 /lib/systemd/system/mx2.service \
    /etc/systemd/system/mx2.service /etc/systemd/system/multi-user.target.wants/mx2.service \
    /var/lib/systemd/deb-systemd-helper-enabled/mx2.service.dsh-also \
    /usr/share/man/man8/mx2.8.gz /usr/share/man/man5/mx2.toml.5.gz /usr/share/doc/mx2; do
    [ ! -e "$p" ] && [ ! -L "$p" ] || fail "$p left after purge"
done
if dpkg-query -W -f='${Status}' mx2 2>/dev/null | grep -qv 'not-installed'; then
    fail "mx2 still known to dpkg after purge"
fi
getent passwd mx2 >/dev/null || fail "purge removed the mx2 user (it is meant to be kept)"
say "reinstall, remove and purge clean (user mx2 kept by design)"

say "all checks passed in $((SECONDS - T0)) s"
