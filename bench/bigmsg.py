#!/usr/bin/env python3
"""Memory for one large message: mx2's peak RSS while it accepts a message
of MB MiB (default 47, just under the default 50,000,000-byte limit) and relays it
to the rig's sink. Prints one JSON line.

    python3 bench/bigmsg.py [MB]

Uses bench/mx2.sh (ports 10125/10126, $BENCH_TMP) and ../shared/bench/lib/sink.py.
Loopback only; every wait has a deadline.
"""
import json, os, smtplib, subprocess, sys, time

HERE = os.path.dirname(os.path.abspath(__file__))
RIG = os.path.join(HERE, "..", "..", "shared", "bench", "lib", "sink.py")
PORT, PRIMARY = 10125, 10126
TMP = os.environ.setdefault("BENCH_TMP", "/tmp/mxbench")
MB = float(sys.argv[1]) if len(sys.argv) > 1 else 47


def status(pid, key):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return None


def main():
    plug = os.path.join(HERE, "mx2.sh")
    os.makedirs(TMP, exist_ok=True)
    stats = os.path.join(TMP, "bigmsg-sink.json")
    if os.path.exists(stats):
        os.remove(stats)
    sink = subprocess.Popen([sys.executable, RIG, "--port", str(PRIMARY), "--stats", stats,
                             "--max-seconds", "300"], stdout=subprocess.DEVNULL)
    subprocess.run([plug, "stop", str(PORT), str(PRIMARY)], capture_output=True)
    subprocess.run([plug, "start", str(PORT), str(PRIMARY)], check=True)
    try:
        pid = int(subprocess.run([plug, "pids", str(PORT), str(PRIMARY)], capture_output=True,
                                 text=True, check=True).stdout.split()[0])
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                smtplib.SMTP("127.0.0.1", PORT, timeout=5).quit()
                break
            except OSError:
                time.sleep(0.2)
        idle_rss = status(pid, "VmRSS")
        line = b"X" * 76 + b"\r\n"
        body = line * int(MB * 1024 * 1024 / len(line))
        msg = (b"From: <a@sender.test>\r\nTo: <u@example.jp>\r\nSubject: big\r\n"
               b"X-Spam-Level: ***\r\n\r\n" + body)
        t0 = time.time()
        with smtplib.SMTP("127.0.0.1", PORT, timeout=120) as c:
            c.sendmail("a@sender.test", ["u@example.jp"], msg)
        t1 = time.time()
        got = 0
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                with open(stats) as f:
                    got = json.load(f).get("count", 0)
            except (OSError, ValueError):
                pass
            if got >= 1:
                break
            time.sleep(0.1)
        t2 = time.time()
        time.sleep(0.5)
        print(json.dumps({
            "scenario": "bigmsg", "message_mb": round(len(msg) / 1048576, 1),
            "accept_s": round(t1 - t0, 2), "relayed": got >= 1,
            "relay_s": round(t2 - t1, 2),
            "idle_rss_kb": idle_rss, "peak_rss_kb": status(pid, "VmHWM"),
            "peak_over_idle_mb": round((status(pid, "VmHWM") - idle_rss) / 1024, 1),
        }))
    finally:
        subprocess.run([plug, "stop", str(PORT), str(PRIMARY)], capture_output=True)
        sink.terminate()
        sink.wait(timeout=10)


if __name__ == "__main__":
    main()
