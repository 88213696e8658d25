#!/usr/bin/env python3
"""The load harness: mesh-proxy beside nginx and HAProxy (and a bare hyper proxy, hyper-util's
pooled client with no mesh layer, benches/src/bin/bare_hop.rs), one hop and a meshed pair, every row
measured for every target interleaved, repeated, with the proxies' CPU time and RSS read from
/proc. Run through benches/load/proxy.sh (which installs the tools and builds the binaries).

Placement: the app and every proxy on CPU 0 (one worker each: nginx worker_processes 1,
HAProxy nbthread 1, mesh-proxy pinned so its runtime has one thread), the load generator on
CPU 1. The CPU per request counts only the proxy processes (both of a pair), not the app.

A run is disturbed, and done again (up to twice), when processes that are not ours used more
than DISTURB_PCT percent of a core during it, or when the hypervisor stole more than that
(`steal` in /proc/stat). The table shows medians of REPS undisturbed runs, the spread
(min-max) and the ratio to the best peer.
"""

import json
import os
import re
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.abspath(__file__))
CONF = os.path.join(ROOT, "conf")
REPO = os.path.abspath(os.path.join(ROOT, "..", ".."))
BIN = os.environ.get("MESH_BIN", os.path.join(REPO, "target", "release", "examples"))

DURATION = int(os.environ.get("DURATION", "10"))
REPS = int(os.environ.get("REPS", "3"))
DISTURB_PCT = float(os.environ.get("DISTURB_PCT", "5"))
IDLE_WAIT = int(os.environ.get("IDLE_WAIT", "60"))
IDLE_CONNS = int(os.environ.get("IDLE_CONNS", "1000"))
HANDSHAKES = int(os.environ.get("HANDSHAKES", "300"))
ROWS = os.environ.get("ROWS", "hop,pair,rate,scale,memory,handshake").split(",")
SERVER_CPU, LOAD_CPU, ALL_CPUS = "0", "1", "0,1"
TICK = os.sysconf("SC_CLK_TCK")

PORTS = {
    "APP": 18080, "APP_H2": 18090,
    "NGINX_HOP_H1": 18081, "NGINX_HOP_H2": 18091,
    "HAPROXY_HOP_H1": 18082, "HAPROXY_HOP_H2": 18092,
    "MESH_HOP_H1": 18083, "MESH_HOP_H2": 18093, "HYPER_HOP_H1": 18087, "MESH_HOP_2W": 18097,
    "MESH_HOP_2C": 18098,
    "NGINX_PAIR_H1": 18084, "NGINX_PAIR_H2": 18094, "NGINX_PAIR_IN": 18184,
    "HAPROXY_PAIR_H1": 18085, "HAPROXY_PAIR_H2": 18095, "HAPROXY_PAIR_IN": 18185,
    "MESH_PAIR_H1": 18086, "MESH_PAIR_H2": 18096,
    "MESH_PAIR_IN_H1": 18186, "MESH_PAIR_IN_H2": 18196,
}


def addr(name):
    return f"127.0.0.1:{PORTS[name]}"


class Procs:
    """The processes this harness started, by target name."""

    def __init__(self, work):
        self.work = work
        self.children = []
        self.by_target = {}

    def start(self, target, argv, env=None, cpus=SERVER_CPU):
        p = subprocess.Popen(
            ["taskset", "-c", cpus] + argv,
            stdout=subprocess.DEVNULL,
            stderr=open(os.path.join(self.work, f"{target}.log"), "ab"),
            env=dict(os.environ, **(env or {})),
            start_new_session=True,
        )
        self.children.append(p)
        self.by_target.setdefault(target, []).append(p.pid)
        return p

    def pids(self, target):
        """The target's processes and their children (nginx's workers)."""
        found = []
        for pid in self.by_target.get(target, []):
            found.append(pid)
            found.extend(children_of(pid))
        return found

    def stop(self):
        for p in self.children:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for p in self.children:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)


def children_of(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(c) for c in f.read().split()]
    except OSError:
        return []


def cpu_ticks(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except OSError:
            pass
    return total


def rss_kb(pids, field="VmRSS:"):
    """Resident memory of `pids` in KB: all of it (VmRSS), or with field="RssAnon:" only the
    private part (heap, stacks), without the pages of the binary and libraries that every
    process running the same files shares through the page cache."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith(field):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def machine_ticks():
    """(busy, steal) jiffies over all CPUs."""
    with open("/proc/stat") as f:
        cpu = [int(x) for x in f.readline().split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = cpu[:8]
    return user + nice + system + irq + softirq, steal


def all_our_pids(procs, extra):
    ours = set(extra)
    for target in procs.by_target:
        ours.update(procs.pids(target))
    ours.add(os.getpid())
    return ours


def measure(procs, target_pids, argv, parse):
    """Runs the load generator `argv` on the load CPU; returns (parsed, cpu_seconds_of_target,
    disturbed_pct)."""
    busy0, steal0 = machine_ticks()
    everyone0 = cpu_ticks(all_our_pids(procs, []))
    ours0 = cpu_ticks(target_pids)
    start = time.monotonic()
    load = subprocess.Popen(["taskset", "-c", LOAD_CPU] + argv, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    out, _ = load.communicate()
    elapsed = time.monotonic() - start
    ours1 = cpu_ticks(target_pids)
    # The load generator is gone by now: its CPU is in the children's times of this process.
    children = os.times()
    busy1, steal1 = machine_ticks()
    everyone1 = cpu_ticks(all_our_pids(procs, []))
    load_cpu = (children.children_user + children.children_system) * TICK
    measure.children_seen = getattr(measure, "children_seen", 0)
    load_ticks = load_cpu - measure.children_seen
    measure.children_seen = load_cpu
    others = (busy1 - busy0) - (everyone1 - everyone0) - load_ticks
    disturbed = max(others, steal1 - steal0) * 100.0 / (elapsed * TICK)
    return parse(out), (ours1 - ours0) / TICK, disturbed


def parse_wrk(out):
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    errors = sum(int(x) for x in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"requests": requests, "rps": rps, "errors": errors + (int(non2xx.group(1)) if non2xx else 0),
            "p50": wrk_latency(out, "50%"), "p99": wrk_latency(out, "99%")}


def wrk_latency(out, label):
    m = re.search(rf"^\s+{re.escape(label)}\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
    if not m:
        return None
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]
    return float(m.group(1)) * scale


def parse_h2load(out, log=None):
    m = re.search(r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                  r"(\d+) errored, (\d+) timeout", out)
    codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    if not m or not codes:
        raise RuntimeError(f"h2load said: {out[-500:]}")
    done = int(m.group(2))
    secs = re.search(r"finished in ([\d.]+)(s|ms)", out)
    elapsed = float(secs.group(1)) / (1000.0 if secs.group(2) == "ms" else 1.0)
    # Errors: requests not done, errored or timed out, and 4xx/5xx answers. Not h2load's
    # "failed": its HTTP/1 parser fails HAProxy's HTTP/1 answers relayed from HTTP/2 (an empty
    # reason phrase), logging them with status 0, though they are whole 200s.
    errors = int(m.group(1)) - done + int(m.group(5)) + int(m.group(6)) + int(codes.group(3)) + int(codes.group(4))
    result = {"requests": done, "rps": done / elapsed, "errors": errors, "p50": None, "p99": None}
    if log:
        times = []
        with open(log) as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 3 and parts[1] in ("200", "0"):
                    times.append(int(parts[2]) / 1000.0)
        if times:
            times.sort()
            result["p50"] = times[len(times) // 2]
            result["p99"] = times[min(len(times) - 1, int(len(times) * 0.99))]
    return result


def loadgen(kind, target_addr, work):
    """(argv, parse) of one scenario against `target_addr`."""
    url = f"http://{target_addr}/"
    if kind.startswith("h1-"):
        conns = kind.split("-")[1]
        argv = ["wrk", "-t1", f"-c{conns}", f"-d{DURATION}s", "--latency", "-H", "Host: app", url]
        return argv, parse_wrk
    if kind == "h2-16x4":
        argv = ["h2load", "-c16", "-m4", "-t1", f"-D{DURATION}", "-H", ":authority: app", url]
        return argv, parse_h2load
    if kind.startswith("rate-"):
        rate = int(kind.split("-")[1])
        log = os.path.join(work, "h2load.log")
        if os.path.exists(log):
            os.remove(log)
        clients = 10
        # A number of requests, not -D: h2load 1.52 never ends a timed run with --rps.
        argv = ["h2load", "--h1", f"-c{clients}", "-t1", f"--rps={rate // clients}", f"-n{rate * DURATION}",
                "-H", ":authority: app", f"--log-file={log}", url]
        return argv, lambda out: parse_h2load(out, log)
    raise ValueError(kind)


def render(template, work, subst, name=None):
    with open(os.path.join(CONF, template)) as f:
        text = f.read()
    text = text.replace("@WORK@", work)
    for key, value in subst.items():
        text = text.replace(f"@{key}@", value)
    for key in PORTS:
        text = text.replace(f"@{key}@", addr(key))
    unfilled = re.findall(r"@[A-Z0-9_]+@", text)
    if unfilled:
        raise RuntimeError(f"{template}: nothing to fill {unfilled} with")
    out = os.path.join(work, name or template)
    with open(out, "w") as f:
        f.write(text)
    return out


def wait_for(port, what):
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on {port}")


def certificates(work):
    ca = os.path.join(work, "ca")
    subprocess.run([f"{BIN}/mesh-ca", "init", "--dir", ca], check=True, stdout=subprocess.DEVNULL)
    for name, identity in (("app", "app.load.mesh"), ("client", "client.load.mesh")):
        out = os.path.join(work, name)
        subprocess.run([f"{BIN}/mesh-ca", "issue", identity, "--dir", ca, "--out", out], check=True,
                       stdout=subprocess.DEVNULL)
        # HAProxy wants certificate and key in one file.
        with open(os.path.join(out, "combined.pem"), "w") as combined:
            for part in ("cert.pem", "key.pem"):
                with open(os.path.join(out, part)) as f:
                    combined.write(f.read())


def start_all(procs, work):
    p = procs
    p.start("app", ["nginx", "-c", render("nginx-app.conf", work, {}), "-g", "daemon off;"])
    p.start("nginx", ["nginx", "-c", render("nginx-hop.conf", work, {"HOP_H1": addr("NGINX_HOP_H1"), "HOP_H2": addr("NGINX_HOP_H2")}), "-g", "daemon off;"])
    p.start("haproxy", ["haproxy", "-f", render("haproxy-hop.cfg", work, {"HOP_H1": addr("HAPROXY_HOP_H1"), "HOP_H2": addr("HAPROXY_HOP_H2")})])
    nginx_pair = {"PAIR_H1": addr("NGINX_PAIR_H1"), "PAIR_H2": addr("NGINX_PAIR_H2"), "PAIR_IN": addr("NGINX_PAIR_IN")}
    p.start("nginx pair", ["nginx", "-c", render("nginx-pair-in.conf", work, nginx_pair), "-g", "daemon off;"])
    p.start("nginx pair", ["nginx", "-c", render("nginx-pair-out.conf", work, nginx_pair), "-g", "daemon off;"])
    haproxy_pair = {"PAIR_H1": addr("HAPROXY_PAIR_H1"), "PAIR_H2": addr("HAPROXY_PAIR_H2"), "PAIR_IN": addr("HAPROXY_PAIR_IN")}
    p.start("haproxy pair", ["haproxy", "-f", render("haproxy-pair-in.cfg", work, haproxy_pair)])
    p.start("haproxy pair", ["haproxy", "-f", render("haproxy-pair-out.cfg", work, haproxy_pair)])
    p.start("hyper", [os.path.join(REPO, "target", "release", "bare_hop"), addr("HYPER_HOP_H1"), addr("APP")])
    env = {"MESH_LOG": "warn"}
    mesh = f"{BIN}/mesh-proxy"
    for version, app in (("h1", "APP"), ("h2", "APP_H2")):
        suffix = "" if version == "h1" else "-h2"
        v = version.upper()
        hop = render("mesh-hop.toml", work, {"HOP": addr(f"MESH_HOP_{v}"), "APP_FOR_HOP": addr(app)},
                     f"mesh-hop-{version}.toml")
        p.start(f"mesh{suffix}", [mesh, "--config", hop], env)
        pair_in = render("mesh-pair-in.toml", work, {"PAIR_IN": addr(f"MESH_PAIR_IN_{v}"), "APP_FOR_PAIR": addr(app)},
                         f"mesh-pair-in-{version}.toml")
        p.start(f"mesh pair{suffix}", [mesh, "--config", pair_in], env)
        pair_out = render("mesh-pair-out.toml", work, {"PAIR": addr(f"MESH_PAIR_{v}"), "PAIR_IN": addr(f"MESH_PAIR_IN_{v}")},
                          f"mesh-pair-out-{version}.toml")
        p.start(f"mesh pair{suffix}", [mesh, "--config", pair_out], env)
    # The scaling row's proxy: two workers, allowed on both cores (the load generator's too).
    two = render("mesh-hop.toml", work, {"HOP": addr("MESH_HOP_2W"), "APP_FOR_HOP": addr("APP")}, "mesh-hop-2w.toml")
    with open(two, "a") as f:
        f.write("\n[runtime]\nworkers = 2\n")
    p.start("mesh 2 workers", [mesh, "--config", two], env, cpus=ALL_CPUS)
    # The same with a current-thread runtime per worker, each accepting from the one listener.
    per_core = render("mesh-hop.toml", work, {"HOP": addr("MESH_HOP_2C"), "APP_FOR_HOP": addr("APP")}, "mesh-hop-2c.toml")
    with open(per_core, "a") as f:
        f.write("\n[runtime]\nworkers = 2\nscheduler = \"per-core\"\n")
    p.start("mesh 2 per-core", [mesh, "--config", per_core], env, cpus=ALL_CPUS)
    for name in PORTS:
        wait_for(PORTS[name], name)


# (row label, scenario, [(target name, process group, address)])
def rows():
    hop_h1 = [("direct", None, "APP"), ("nginx", "nginx", "NGINX_HOP_H1"),
              ("haproxy", "haproxy", "HAPROXY_HOP_H1"), ("hyper", "hyper", "HYPER_HOP_H1"),
              ("mesh", "mesh", "MESH_HOP_H1")]
    hop_h2 = [("direct", None, "APP_H2"), ("nginx", "nginx", "NGINX_HOP_H2"),
              ("haproxy", "haproxy", "HAPROXY_HOP_H2"), ("mesh", "mesh-h2", "MESH_HOP_H2")]
    pair_h1 = [("nginx", "nginx pair", "NGINX_PAIR_H1"), ("haproxy", "haproxy pair", "HAPROXY_PAIR_H1"),
               ("mesh", "mesh pair", "MESH_PAIR_H1")]
    pair_h2 = [("nginx", "nginx pair", "NGINX_PAIR_H2"), ("haproxy", "haproxy pair", "HAPROXY_PAIR_H2"),
               ("mesh", "mesh pair-h2", "MESH_PAIR_H2")]
    out = []
    if "hop" in ROWS:
        out += [("one hop, HTTP/1.1, 16 conns", "h1-16", hop_h1),
                ("one hop, HTTP/1.1, 64 conns", "h1-64", hop_h1),
                ("one hop, h2c, 16 conns x 4 streams", "h2-16x4", hop_h2)]
    hop_rate = [t for t in hop_h1 if t[0] != "hyper"]
    if "rate" in ROWS:
        out += [("one hop at 2,000 req/s", "rate-2000", hop_rate),
                ("one hop at 10,000 req/s", "rate-10000", hop_rate)]
    if "pair" in ROWS:
        out += [("pair (mTLS between), HTTP/1.1, 64 conns", "h1-64", pair_h1),
                ("pair, h2c clients, 16 x 4", "h2-16x4", pair_h2)]
    if "scale" in ROWS:
        # One worker on CPU 0 against two on both CPUs, the load generator on CPU 1 in both:
        # on two cores the second worker shares its core with the load, so req/s cannot double;
        # CPU per request shows whether a second worker costs anything (locks, cross-thread
        # wake-ups) that would stop the proxy scaling on a machine with cores to spare. Two
        # workers run both ways: tokio's work-stealing pool, and a current-thread runtime per
        # worker ([runtime] scheduler = "per-core").
        out += [("workers: 1 (CPU 0) and 2 (CPUs 0-1), HTTP/1.1, 64 conns", "h1-64",
                 [("mesh", "mesh", "MESH_HOP_H1"), ("mesh 2w", "mesh 2 workers", "MESH_HOP_2W"),
                  ("mesh 2 per-core", "mesh 2 per-core", "MESH_HOP_2C")])]
    if "rate" in ROWS and "pair" in ROWS:
        out += [("pair at 2,000 req/s", "rate-2000", [("direct", None, "APP")] + pair_h1),
                ("pair at 10,000 req/s", "rate-10000", [("direct", None, "APP")] + pair_h1)]
    return out


def run_rows(procs, work, results):
    for label, scenario, targets in rows():
        runs = {name: [] for name, _, _ in targets}
        for rep in range(REPS):
            for name, group, port in targets:
                for attempt in range(3):
                    argv, parse = loadgen(scenario, addr(port), work)
                    pids = procs.pids(group) if group else procs.pids("app")
                    parsed, cpu, disturbed = measure(procs, pids, argv, parse)
                    parsed["cpu_us"] = cpu * 1e6 / max(parsed["requests"], 1)
                    parsed["disturbed"] = disturbed
                    if disturbed <= DISTURB_PCT:
                        break
                    print(f"  ({label} / {name}: {disturbed:.1f}% of a core not ours; again)", file=sys.stderr)
                runs[name].append(parsed)
                print(f"  {label:42} {name:8} rep {rep + 1}: {parsed['rps']:9.0f} req/s "
                      f"{parsed['cpu_us']:6.1f} us/req p99 {parsed['p99']}", file=sys.stderr)
        results.append({"row": label, "scenario": scenario, "runs": runs})


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def spread(values):
    values = [v for v in values if v is not None]
    if len(values) < 2:
        return ""
    digits = 0 if max(values) >= 100 else 1
    return f" ({min(values):.{digits}f}-{max(values):.{digits}f})"


def table(results):
    lines = ["| row | target | req/s | proxy CPU µs/req | p50 ms | p99 ms | errors | vs best peer (req/s, CPU) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        stats = {}
        for name, runs in r["runs"].items():
            stats[name] = {k: med([x[k] for x in runs]) for k in ("rps", "cpu_us", "p50", "p99")}
        peers = [n for n in stats if n in ("nginx", "haproxy")]
        best_rps = max((stats[n]["rps"] for n in peers), default=None)
        best_cpu = min((stats[n]["cpu_us"] for n in peers), default=None)
        for name, runs in r["runs"].items():
            s = stats[name]
            ratio = ""
            if name == "mesh" and best_rps:
                ratio = f"{s['rps'] / best_rps:.2f}x, {s['cpu_us'] / best_cpu:.2f}x"
            elif name in ("mesh 2w", "mesh 2 per-core") and "mesh" in stats:
                one = stats["mesh"]
                ratio = f"vs 1 worker: {s['rps'] / one['rps']:.2f}x, {s['cpu_us'] / one['cpu_us']:.2f}x"
            cpu = "" if name == "direct" else f"{s['cpu_us']:.1f}{spread([x['cpu_us'] for x in runs])}"
            fmt = lambda v: "" if v is None else f"{v:.2f}"
            lines.append(f"| {r['row']} | {name} | {s['rps']:.0f}{spread([x['rps'] for x in runs])} | {cpu} "
                         f"| {fmt(s['p50'])} | {fmt(s['p99'])} | {sum(x['errors'] for x in runs)} | {ratio} |")
    return "\n".join(lines)


def open_idle(port, count):
    socks = []
    for _ in range(count):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"GET / HTTP/1.1\r\nHost: app\r\n\r\n")
        socks.append(s)
    for s in socks:
        s.settimeout(5)
        s.recv(4096)
    return socks


def memory(procs, idle_before):
    """RSS per proxy: idle (before any load), after the load rows, with IDLE_CONNS idle
    keep-alive client connections, after they closed, and IDLE_WAIT seconds later; then the
    private part (RssAnon) idle and with the idle connections, as the file-backed rest is
    shared by every proxy on a machine that runs the same binary."""
    targets = [("nginx", "nginx", "NGINX_HOP_H1"), ("haproxy", "haproxy", "HAPROXY_HOP_H1"),
               ("mesh", "mesh", "MESH_HOP_H1")]
    rows_ = {}
    for name, group, port in targets:
        pids = procs.pids(group)
        row = {"idle": idle_before[group][0], "after load": rss_kb(pids)}
        socks = open_idle(PORTS[port], IDLE_CONNS)
        time.sleep(1)
        row[f"{IDLE_CONNS} idle conns"] = rss_kb(pids)
        private = (idle_before[group][1], rss_kb(pids, "RssAnon:"))
        for s in socks:
            s.close()
        time.sleep(2)
        row["closed"] = rss_kb(pids)
        rows_[name] = (row, pids, private)
    time.sleep(IDLE_WAIT)
    for name, (row, pids, private) in rows_.items():
        row[f"{IDLE_WAIT} s later"] = rss_kb(pids)
        row["private: idle"], row[f"private: {IDLE_CONNS} conns"] = private
    lines = ["| RSS (MB) | " + " | ".join(next(iter(rows_.values()))[0].keys()) + " | per idle conn |",
             "|---|" + "---|" * (len(next(iter(rows_.values()))[0]) + 1)]
    for name, (row, _, _) in rows_.items():
        per = (row[f"{IDLE_CONNS} idle conns"] - row["after load"]) / IDLE_CONNS
        lines.append(f"| {name} | " + " | ".join(f"{v / 1024:.1f}" for v in row.values()) + f" | {per:.1f} KB |")
    return "\n".join(lines)


def handshakes(procs, work):
    """Server CPU per full mTLS handshake (TLS 1.3, client certificate verified, no
    resumption), HANDSHAKES of them one after another from this process."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_verify_locations(os.path.join(work, "client", "roots.pem"))
    ctx.load_cert_chain(os.path.join(work, "client", "cert.pem"), os.path.join(work, "client", "key.pem"))
    ctx.check_hostname = False
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    targets = [("nginx", "nginx pair", "NGINX_PAIR_IN"), ("haproxy", "haproxy pair", "HAPROXY_PAIR_IN"),
               ("mesh", "mesh pair", "MESH_PAIR_IN_H1")]
    lines = ["| full mTLS handshake | server CPU µs per handshake |", "|---|---|"]
    os.sched_setaffinity(0, {int(LOAD_CPU)})
    for name, group, port in targets:
        # Only the server side of the pair: its first process.
        server = procs.by_target[group][0]
        pids = [server] + children_of(server)
        before = cpu_ticks(pids)
        for _ in range(HANDSHAKES):
            with socket.create_connection(("127.0.0.1", PORTS[port])) as raw:
                with ctx.wrap_socket(raw, server_hostname="app.load.mesh") as tls:
                    # TLS 1.3: the server checks the client's certificate after the client's
                    # Finished; a request makes sure it has.
                    tls.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
                    try:
                        tls.recv(64)
                    except (ssl.SSLError, OSError):
                        pass
        cpu = (cpu_ticks(pids) - before) / TICK
        lines.append(f"| {name} | {cpu * 1e6 / HANDSHAKES:.0f} |")
    return "\n".join(lines)


def main():
    work = tempfile.mkdtemp(prefix="mesh-load-")
    procs = Procs(work)
    try:
        certificates(work)
        start_all(procs, work)
        time.sleep(1)
        idle_before = {g: (rss_kb(procs.pids(g)), rss_kb(procs.pids(g), "RssAnon:"))
                       for g in ("nginx", "haproxy", "mesh")}
        # Warm every target once (pools, connections between the pair's proxies).
        for _, scenario, targets in rows():
            for _, _, port in targets:
                subprocess.run(["taskset", "-c", LOAD_CPU, "wrk", "-t1", "-c64", "-d1s", "-H", "Host: app",
                                f"http://{addr(port)}/"], stdout=subprocess.DEVNULL)
        results = []
        run_rows(procs, work, results)
        print(f"{os.cpu_count()} cores; {DURATION} s per run, medians of {REPS}; servers on CPU "
              f"{SERVER_CPU}, load on CPU {LOAD_CPU}; runs redone when > {DISTURB_PCT}% of a core was not ours")
        print()
        print(table(results))
        if "memory" in ROWS:
            print()
            print(memory(procs, idle_before))
        if "handshake" in ROWS:
            print()
            print(handshakes(procs, work))
        with open(os.environ.get("RESULTS", os.path.join(tempfile.gettempdir(), "mesh-load.json")), "w") as f:
            json.dump(results, f, indent=1)
    finally:
        procs.stop()
        if not os.environ.get("KEEP"):
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
