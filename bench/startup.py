#!/usr/bin/env python3
"""Start-up time and idle RSS of the release binary.

Starts `target/release/boa-exchange serve` N times on a fresh temp data dir (first start:
creates the store and identity) and on the same dir again (warm start), measures the time
from spawn to READY=1 on a NOTIFY_SOCKET this script binds, then the resident memory (VmRSS,
VmHWM) after 5 s idle. Usage: bench/startup.py [runs]   (run `cargo build --release` first)
"""
import os, socket, statistics, subprocess, sys, tempfile, time

BIN = os.path.join(os.path.dirname(__file__), "..", "target", "release", "boa-exchange")
RUNS = int(sys.argv[1]) if len(sys.argv) > 1 else 10


def start(data):
    cfg = os.path.join(data, "config.toml")
    with open(cfg, "w") as f:
        f.write('[server]\nlisten = "127.0.0.1:0"\n[storage]\ndata_dir = "%s/data"\n'
                '[control]\nsocket = "%s/control.sock"\n[schedule]\nenabled = false\n' % (data, data))
    sock_path = os.path.join(data, "notify.sock")
    if os.path.exists(sock_path):
        os.unlink(sock_path)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(sock_path)
    s.settimeout(20)
    env = dict(os.environ, NOTIFY_SOCKET=sock_path, RUST_LOG="warn")
    t0 = time.perf_counter()
    p = subprocess.Popen([BIN, "serve", "--config", cfg], env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while True:
        msg = s.recv(4096).decode()
        if "READY=1" in msg:
            break
    ready = time.perf_counter() - t0
    return p, s, ready


def rss(pid):
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(("VmRSS", "VmHWM")):
                k, v = line.split(":")
                out[k] = int(v.split()[0]) / 1024.0
    return out


def stop(p, s):
    p.terminate()
    p.wait(timeout=30)
    s.close()


cold, warm = [], []
for _ in range(RUNS):
    with tempfile.TemporaryDirectory() as d:
        p, s, t = start(d)
        cold.append(t)
        stop(p, s)
        p, s, t = start(d)
        warm.append(t)
        stop(p, s)
with tempfile.TemporaryDirectory() as d:
    p, s, _ = start(d)
    time.sleep(5)
    mem = rss(p.pid)
    stop(p, s)
print("binary: %s (%.1f MiB)" % (os.path.realpath(BIN), os.path.getsize(BIN) / 1048576))
print("start-up to READY=1, new data dir : median %.1f ms, min %.1f ms, max %.1f ms (n=%d)"
      % (statistics.median(cold) * 1000, min(cold) * 1000, max(cold) * 1000, RUNS))
print("start-up to READY=1, existing dir : median %.1f ms, min %.1f ms, max %.1f ms (n=%d)"
      % (statistics.median(warm) * 1000, min(warm) * 1000, max(warm) * 1000, RUNS))
print("idle after 5 s: VmRSS %.1f MiB, VmHWM %.1f MiB" % (mem["VmRSS"], mem["VmHWM"]))
