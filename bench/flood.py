#!/usr/bin/env python3
"""Peak memory and /health latency of the daemon under a flood of stuck HTTP connections.

Starts `boa-exchange serve` (schedule off, nothing fetched) with max_connections above the
flood, opens N connections that never finish their request -- half stop in the middle of the
request head, half send a complete head and stop in the middle of the body -- and, while they
are all open, times GET /health on fresh connections and `status` on the control socket. Then
it waits for request_timeout_secs to close them and reads the daemon's peak RSS (VmHWM).

Usage: bench/flood.py [--bin PATH] [--conns N] [--timeout SECS] [--max-connections N]
Defaults: target/release/boa-exchange (or $CARGO_TARGET_DIR/release), 2000 connections,
request_timeout_secs = 10, max_connections = 4096.
"""
import argparse, json, os, resource, socket, statistics, subprocess, sys, tempfile, time

here = os.path.dirname(os.path.abspath(__file__))
target = os.environ.get("CARGO_TARGET_DIR", os.path.join(here, "..", "target"))
ap = argparse.ArgumentParser()
ap.add_argument("--bin", default=os.path.join(target, "release", "boa-exchange"))
ap.add_argument("--conns", type=int, default=2000)
ap.add_argument("--timeout", type=int, default=10)
ap.add_argument("--max-connections", type=int, default=4096)
args = ap.parse_args()

soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
want = min(hard, max(soft, args.conns + 256))
resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def status_of(pid):
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(("VmRSS", "VmHWM")):
                k, v = line.split(":")
                out[k] = int(v.split()[0]) / 1024.0
    return out


def health(port):
    t = time.perf_counter()
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    s.close()
    assert data.startswith(b"HTTP/1.1 200"), data[:100]
    return (time.perf_counter() - t) * 1000


def control_status(path):
    t = time.perf_counter()
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(30)
    s.connect(path)
    s.sendall(b'{"cmd": "status", "args": {}}\n')
    data = b""
    while not data.endswith(b"\n"):
        data += s.recv(65536)
    s.close()
    assert json.loads(data)["ok"] is True
    return (time.perf_counter() - t) * 1000


def summary(ms):
    ms = sorted(ms)
    return "median %.2f ms, p95 %.2f ms, max %.2f ms (n=%d)" % (
        statistics.median(ms), ms[int(len(ms) * 0.95) - 1], ms[-1], len(ms))


with tempfile.TemporaryDirectory() as d:
    port = free_port()
    cfg = os.path.join(d, "config.toml")
    sock = os.path.join(d, "control.sock")
    with open(cfg, "w") as f:
        f.write('[server]\nlisten = "127.0.0.1:%d"\nmax_connections = %d\nrequest_timeout_secs = %d\n'
                '[storage]\ndata_dir = "%s/data"\n[control]\nsocket = "%s"\n'
                '[boa]\nurl = "http://127.0.0.1:9/"\n[schedule]\nenabled = false\n'
                % (port, args.max_connections, args.timeout, d, sock))
    env = dict(os.environ, RUST_LOG="warn")
    p = subprocess.Popen([args.bin, "serve", "--config", cfg], env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            try:
                health(port)
                break
            except OSError:
                time.sleep(0.05)
        idle = status_of(p.pid)
        base = [health(port) for _ in range(50)]

        t0 = time.perf_counter()
        conns = []
        for i in range(args.conns):
            c = socket.create_connection(("127.0.0.1", port))
            if i % 2 == 0:
                c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            else:
                c.sendall(b"PUT /api/v1/companies/1/settings HTTP/1.1\r\nHost: x\r\n"
                          b"Content-Length: 10000\r\n\r\n{\"sync")
            conns.append(c)
        opened = time.perf_counter() - t0
        time.sleep(0.5)
        during = [health(port) for _ in range(100)]
        ctl = [control_status(sock) for _ in range(20)]
        mem = status_of(p.pid)

        # Wait for the daemon to close them all.
        closed = 0
        deadline = time.time() + 2 * args.timeout + 10
        for c in conns:
            c.settimeout(max(0.1, deadline - time.time()))
            try:
                while c.recv(65536):
                    pass
                closed += 1
            except (socket.timeout, OSError):
                pass
            c.close()
        all_closed = time.perf_counter() - t0
        after = status_of(p.pid)

        print("binary: %s" % os.path.realpath(args.bin))
        print("flood: %d connections (half mid-head, half mid-body), opened in %.2f s"
              % (args.conns, opened))
        print("idle RSS before: %.1f MiB" % idle["VmRSS"])
        print("RSS with the flood open: %.1f MiB" % mem["VmRSS"])
        print("peak RSS (VmHWM) over the run: %.1f MiB" % after["VmHWM"])
        print("/health before the flood: %s" % summary(base))
        print("/health during the flood: %s" % summary(during))
        print("control status during the flood: %s" % summary(ctl))
        print("closed by the daemon: %d of %d, all within %.1f s of the flood's start "
              "(request_timeout_secs = %d)" % (closed, args.conns, all_closed, args.timeout))
    finally:
        p.terminate()
        p.wait(timeout=30)
