#!/usr/bin/env python3
"""credport's benchmark driver (run by scripts/bench; Python 3 standard library only).

Measures, side by side in one run, credport (and any --peer binary speaking the same
protocol) against bench/baseline, prints a markdown table of medians and writes it into
docs/PERFORMANCE.md between the bench markers. Raw numbers go to .cache/bench/.

The protocol a peer must speak (the one credport speaks):
  BIN serve --listen 127.0.0.1:0      prints `listening on http://ADDR` on stderr
  BIN token --project P --stage S     prints the scope's token on stdout
  BIN exec --project P --stage S -- true
  files: $HOME/.aws/{credentials,config}, $XDG_CONFIG_HOME/credport/config.toml
         ([projects.P] default_stage/stages), state under $XDG_DATA_HOME,
         runtime under $CREDPORT_RUNTIME_DIR; STS at $AWS_ENDPOINT_URL_STS.
  GET /v1/credentials/P/S with `Authorization: <token>` answers the container JSON.
"""

import argparse
import concurrent.futures
import datetime as dt
import http.client
import http.server
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
MIB = 1024 * 1024
PROJECT, STAGE, PROFILE = "bench", "dev", "devAccount"
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"


def log(msg):
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def pct(xs, p):
    xs = sorted(x for x in xs if x is not None)
    if not xs:
        return None
    k = min(len(xs) - 1, max(0, int(round(p / 100 * len(xs) + 0.5)) - 1))
    return xs[k]


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def session_keys(tag):
    return (
        f"ASIA{tag:0>16}"[:20],
        f"secret{tag}".ljust(40, "x")[:40],
        # A realistic session token size (STS tokens are 400-1000 characters).
        (f"token{tag}" + "Q" * 800)[:800],
    )


def credentials_text(profiles):
    out = []
    for name, (ak, sk, st) in profiles.items():
        out.append(f"[{name}]\naws_access_key_id = {ak}\naws_secret_access_key = {sk}\naws_session_token = {st}\n")
    return "\n".join(out)


# --------------------------------------------------------------------------------------
# A HOME for one daemon


class Home:
    def __init__(self, work, name, bin_path):
        self.dir = os.path.join(work, name)
        self.bin = bin_path
        for d in [".aws", ".config/credport", ".local/share", "run"]:
            os.makedirs(os.path.join(self.dir, d), exist_ok=True)
        os.chmod(os.path.join(self.dir, "run"), 0o700)
        self.extra = {}

    def env(self):
        e = {k: os.environ[k] for k in ("PATH", "LANG", "TMPDIR") if k in os.environ}
        e.update(
            HOME=self.dir,
            XDG_CONFIG_HOME=os.path.join(self.dir, ".config"),
            XDG_DATA_HOME=os.path.join(self.dir, ".local/share"),
            CREDPORT_RUNTIME_DIR=os.path.join(self.dir, "run"),
        )
        e.update(self.extra)
        return e

    @property
    def credentials(self):
        return os.path.join(self.dir, ".aws/credentials")

    def write(self, rel, text, mode="atomic"):
        path = os.path.join(self.dir, rel)
        write_file(path, text, mode)

    def token(self, project=PROJECT, stage=STAGE):
        out = subprocess.run([self.bin, "token", "--project", project, "--stage", stage],
                             env=self.env(), capture_output=True, text=True, timeout=30)
        if out.returncode != 0:
            raise RuntimeError(f"{self.bin} token failed: {out.stderr}")
        return out.stdout.strip()


def write_file(path, text, mode):
    if mode == "inplace":
        # What `aws configure` and most credential helpers do: truncate, write, close.
        with open(path, "w") as f:
            f.write(text)
    else:
        tmp = f"{path}.bench-tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, path)


def small_config(home, project=PROJECT, profile=PROFILE):
    home.write(".config/credport/config.toml",
               f'[projects.{project}]\ndefault_stage = "dev"\nstages = {{ dev = "{profile}" }}\n')


# --------------------------------------------------------------------------------------
# Processes


class Server:
    """A running server: credport-like (`BIN serve`) or the baseline."""

    def __init__(self, cmd, env, logdir, name):
        self.name = name
        self.logpath = os.path.join(logdir, f"{name}-{time.monotonic_ns()}.log")
        self.log = open(self.logpath, "wb")
        self.t0 = time.perf_counter()
        self.proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=self.log)
        self.addr = None
        self.stderr_token = None
        deadline = time.monotonic() + 30
        with open(self.logpath, "rb") as r:
            buf = b""
            while self.addr is None:
                chunk = r.read()
                if chunk:
                    buf += chunk
                    m = re.search(rb"listening on http://([0-9.]+:\d+)", buf)
                    if m:
                        self.addr = m.group(1).decode()
                    t = re.search(rb"^token (\S+)$", buf, re.M)
                    if t:
                        self.stderr_token = t.group(1).decode()
                    continue
                if self.proc.poll() is not None:
                    raise RuntimeError(f"{name} exited: {buf.decode(errors='replace')[-2000:]}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{name} did not start: {buf.decode(errors='replace')[-2000:]}")
                time.sleep(0.0002)
        self.host, self.port = self.addr.split(":")
        self.port = int(self.port)
        self.pid = self.proc.pid

    def url(self, path):
        return f"http://{self.addr}{path}"

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()

    def rss(self):
        return proc_status(self.pid, "VmRSS") * 1024

    def ctx_switches(self):
        total = 0
        for tid in os.listdir(f"/proc/{self.pid}/task"):
            try:
                with open(f"/proc/{self.pid}/task/{tid}/status") as f:
                    for line in f:
                        if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                            total += int(line.split()[1])
            except FileNotFoundError:
                pass
        return total


def proc_status(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


class Client:
    """A keep-alive HTTP/1.1 client for one scope."""

    def __init__(self, addr, token, path):
        host, port = addr.split(":")
        self.conn = http.client.HTTPConnection(host, int(port), timeout=10)
        self.headers = {"Authorization": token, "Host": addr}
        self.path = path

    def get(self):
        try:
            self.conn.request("GET", self.path, headers=self.headers)
            r = self.conn.getresponse()
            return r.status, r.read()
        except (http.client.HTTPException, OSError):
            self.conn.close()
            raise


def get_once(addr, token, path, timeout=10):
    host, port = addr.split(":")
    c = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        c.request("GET", path, headers={"Authorization": token, "Host": addr})
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


# --------------------------------------------------------------------------------------
# Load (wrk)


def parse_wrk_time(s):
    m = re.match(r"([\d.]+)(us|ms|s|m)$", s)
    v, u = float(m.group(1)), m.group(2)
    return v * {"us": 1, "ms": 1e3, "s": 1e6, "m": 6e7}[u]


def wrk(url, token, conns, duration, threads=None):
    threads = threads or min(conns, 2)
    cmd = ["wrk", f"-t{threads}", f"-c{conns}", f"-d{duration}s", "--latency",
           "-H", f"Authorization: {token}", url]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60).stdout
    res = {}
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    res["rps"] = float(m.group(1)) if m else None
    m = re.search(r"(\d+) requests in", out)
    res["requests"] = int(m.group(1)) if m else 0
    for p in ("50", "99"):
        m = re.search(rf"^\s+{p}%\s+(\S+)", out, re.M)
        res[f"p{p}_us"] = parse_wrk_time(m.group(1)) if m else None
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    res["non2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: (.*)", out)
    res["socket_errors"] = m.group(1) if m else ""
    if res["rps"] is None:
        log(f"wrk output not understood:\n{out}")
    return res


# --------------------------------------------------------------------------------------
# Measurements


def reload_propagation(home, addr, token, mode, writes, base_profiles, profile=PROFILE,
                       project=PROJECT, stage=STAGE):
    """Write, then poll as fast as possible until the new key is served. Milliseconds."""
    path = f"/v1/credentials/{project}/{stage}"
    client = Client(addr, token, path)
    lat = []
    for i in range(writes):
        tag = f"{mode[:2]}{i:05d}{time.monotonic_ns() % 100000:05d}"
        keys = session_keys(tag)
        profiles = dict(base_profiles)
        profiles[profile] = keys
        text = credentials_text(profiles)
        want = keys[0].encode()
        write_file(home.credentials, text, mode)
        t_end = time.perf_counter()
        seen = None
        while time.perf_counter() - t_end < 2.0:
            try:
                status, body = client.get()
            except (http.client.HTTPException, OSError):
                client = Client(addr, token, path)
                continue
            if status == 200 and want in body:
                seen = time.perf_counter()
                break
        lat.append((seen - t_end) * 1e3 if seen else 2000.0)
        time.sleep(0.02 + (i % 7) * 0.003)
    return {"p50_ms": median(lat), "p99_ms": pct(lat, 99), "max_ms": max(lat),
            "timeouts": sum(1 for x in lat if x >= 2000.0), "n": len(lat)}


def startup(cmd_fn, env, logdir, name, token_fn, path, reps):
    times = []
    for _ in range(reps):
        s = Server(cmd_fn(), env, logdir, name)
        token = token_fn(s)
        deadline = time.monotonic() + 10
        ok = None
        while time.monotonic() < deadline:
            try:
                status, _ = get_once(s.addr, token, path)
                if status == 200:
                    ok = time.perf_counter()
                    break
            except OSError:
                time.sleep(0.0002)
        times.append((ok - s.t0) * 1e3 if ok else None)
        s.stop()
        os.unlink(s.logpath)
    return {"median_ms": median(times), "min_ms": min(t for t in times if t), "n": reps}


def hyperfine_exec(bin_path, env, runs, workdir):
    out = os.path.join(workdir, f"hyperfine-{os.getpid()}-{time.monotonic_ns()}.json")
    cmd = ["hyperfine", "-N", "--warmup", "5", "--runs", str(runs), "--export-json", out,
           "true", f"{bin_path} exec --project {PROJECT} --stage {STAGE} -- true"]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        log(f"hyperfine failed: {r.stderr}")
        return None
    data = json.load(open(out))["results"]
    t_true, t_exec = data[0]["median"] * 1e3, data[1]["median"] * 1e3
    return {"true_ms": t_true, "exec_ms": t_exec, "overhead_ms": t_exec - t_true}


# --------------------------------------------------------------------------------------
# Cold path: moto behind a counting, delaying proxy


class StsProxy:
    """Forwards to moto, counts STS calls, delays each by `delay` seconds and rewrites the
    session's Expiration to `lifetime` seconds from now (so refresh-ahead is due soon)."""

    def __init__(self, upstream_port, delay, lifetime):
        self.calls = []
        self.lock = threading.Lock()
        outer = self

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(n)
                action = re.search(rb"Action=(\w+)", body)
                with outer.lock:
                    outer.calls.append((time.monotonic(), action.group(1).decode() if action else "?"))
                time.sleep(delay)
                c = http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=30)
                hdrs = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                c.request("POST", self.path, body=body, headers=hdrs)
                r = c.getresponse()
                data = r.read()
                exp = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=lifetime)).strftime("%Y-%m-%dT%H:%M:%SZ")
                data = re.sub(rb"<Expiration>[^<]*</Expiration>", f"<Expiration>{exp}</Expiration>".encode(), data)
                self.send_response(r.status)
                for k, v in r.getheaders():
                    if k.lower() not in ("content-length", "connection", "transfer-encoding", "date", "server"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def count(self):
        with self.lock:
            return len(self.calls)

    def stop(self):
        self.server.shutdown()


def start_moto(work):
    moto = os.path.join(ROOT, ".cache/venv/bin/moto_server")
    if not os.access(moto, os.X_OK):
        raise RuntimeError(f"{moto} missing: run scripts/test-deps --only venv")
    port = free_port()
    p = subprocess.Popen([moto, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                         stderr=open(os.path.join(work, "moto.log"), "wb"))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/moto-api/", timeout=2).read()
            return p, port
        except OSError:
            time.sleep(0.1)
    p.kill()
    raise RuntimeError("moto_server did not start")


def cold_path(bin_path, work, name, moto_port, delay, lifetime, refresh_wait, conc=64):
    proxy = StsProxy(moto_port, delay, lifetime)
    home = Home(work, f"cold-{name}", bin_path)
    home.extra = {"AWS_ENDPOINT_URL_STS": f"http://127.0.0.1:{proxy.port}", "AWS_REGION": "us-east-1"}
    home.write(".aws/credentials", "[base]\naws_access_key_id = AKIAIOSFODNN7EXAMPLE\n"
               "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\n")
    home.write(".aws/config", "[profile dev]\nrole_arn = arn:aws:iam::111111111111:role/Dev\n"
               "source_profile = base\nregion = us-east-1\n")
    small_config(home, "cold", "dev")
    token = home.token("cold", "dev")
    s = Server([bin_path, "serve", "--listen", "127.0.0.1:0"], home.env(), work, f"cold-{name}")
    path = "/v1/credentials/cold/dev"

    def burst():
        barrier = threading.Barrier(conc)

        def one(_):
            c = Client(s.addr, token, path)
            c.conn.connect()
            barrier.wait()
            t = time.perf_counter()
            status, _ = c.get()
            return status, (time.perf_counter() - t) * 1e3

        with concurrent.futures.ThreadPoolExecutor(conc) as ex:
            return list(ex.map(one, range(conc)))

    try:
        t_first = time.monotonic()
        first = burst()
        calls_first = proxy.count()
        after = []
        c = Client(s.addr, token, path)
        for _ in range(200):
            t = time.perf_counter()
            st, _ = c.get()
            after.append((time.perf_counter() - t) * 1e3)
        res = {
            "first_ok": sum(1 for st, _ in first if st == 200),
            "first_n": conc,
            "sts_calls_first": calls_first,
            "first_max_ms": max(t for _, t in first),
            "after_p50_ms": median(after),
            "after_max_ms": max(after),
            "sts_delay_ms": delay * 1e3,
        }
        if refresh_wait:
            # The session lives `lifetime` s; credport refreshes with half of that left (and
            # more than 60 s), in the background. Wait into that window, then burst again.
            sleep_for = t_first + refresh_wait - time.monotonic()
            if sleep_for > 0:
                time.sleep(sleep_for)
            before = proxy.count()
            second = burst()
            time.sleep(delay + 1.0)
            res.update({
                "refresh_ok": sum(1 for st, _ in second if st == 200),
                "refresh_max_ms": max(t for _, t in second),
                "sts_calls_refresh": proxy.count() - before,
            })
        return res
    finally:
        s.stop()
        proxy.stop()


# --------------------------------------------------------------------------------------
# Scale


def scale_home(work, name, bin_path, n_profiles, n_projects):
    home = Home(work, f"scale-{name}", bin_path)
    n_cred = n_profiles // 2
    creds = {f"acct{i:05d}": session_keys(f"s{i}") for i in range(n_cred)}
    home.write(".aws/credentials", credentials_text(creds))
    cfg = []
    for i in range(n_profiles - n_cred):
        cfg.append(f"[profile role{i:05d}]\nrole_arn = arn:aws:iam::{100000000000 + i}:role/R{i}\n"
                   f"source_profile = acct{i % n_cred:05d}\nregion = eu-west-1\n")
    home.write(".aws/config", "\n".join(cfg))
    toml = []
    for j in range(n_projects):
        toml.append(f'[projects.p{j:04d}]\ndefault_stage = "dev"\n'
                    f'stages = {{ dev = "acct{(2 * j) % n_cred:05d}", prod = "role{j:05d}" }}\n')
    toml.append(f'[projects.{PROJECT}]\ndefault_stage = "dev"\nstages = {{ dev = "{PROFILE}" }}\n')
    home.write(".config/credport/config.toml", "\n".join(toml))
    creds[PROFILE] = session_keys("scale0")
    home.write(".aws/credentials", credentials_text(creds))
    return home, creds


# --------------------------------------------------------------------------------------
# Report


def fmt(v, unit="", digits=None):
    if v is None:
        return "n/a"
    if isinstance(v, str):
        return v
    if isinstance(v, int) and not unit:
        return f"{v:,}"
    if digits is None:
        digits = 0 if abs(v) >= 100 else (1 if abs(v) >= 10 else 2)
    return f"{v:,.{digits}f}{unit}"


def verdict(ok, why=""):
    if ok is None and why == "informational":
        return "informational"
    if ok is None and why:
        return why
    if ok is None:
        return "not measured" + (f" ({why})" if why else "")
    return "met" if ok else ("**missed**" + (f" ({why})" if why else ""))


def machine_info():
    def sh(cmd):
        try:
            return subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=20).stdout.strip()
        except Exception:
            return "?"
    return {
        "nproc": sh("nproc"),
        "cpu": sh("lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -1"),
        "kernel": sh("uname -srm"),
        "rustc": sh("rustc --version"),
        "wrk": sh("wrk -v 2>&1 | head -1"),
        "hyperfine": sh("hyperfine --version"),
        "python": sys.version.split()[0],
        "loadavg_at_start": sh("cut -d' ' -f1-3 /proc/loadavg"),
        "commit": sh(f"git -C {ROOT} rev-parse --short HEAD") + (
            " (+ uncommitted changes)" if sh(f"git -C {ROOT} status --porcelain --untracked-files=no") else ""),
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def render(R, args, command):
    names = [t["name"] for t in R["targets"]]
    peers = names[1:]
    cp = R["by"]["credport"]
    base = R["baseline"]
    lines = []
    mi = R["machine"]
    lines.append(f"Run {mi['date']}, credport {args.label or 'at commit ' + mi['commit']}. Machine: {mi['nproc']} CPUs, {mi['cpu']}, "
                 f"{mi['kernel']}, {mi['rustc']}, {mi['wrk']}, {mi['hyperfine']}, load average at start "
                 f"{mi['loadavg_at_start']}. **A shared, noisy machine**: other builds and tests ran at the "
                 f"same time, so absolute numbers move between runs; medians of {args.reps} repetitions and "
                 f"the ratios to the baseline measured in the same run are what count.")
    lines.append("")
    lines.append("Command: `" + command + "`")
    lines.append("")
    hdr = "| measure | target | credport | baseline | " + " | ".join(peers) + (" | " if peers else "") + "verdict |"
    lines.append(hdr)
    lines.append("|" + "---|" * (5 + len(peers)))

    def row(measure, target, key, basev, ok, why="", f=fmt):
        vals = [f(R["by"][n].get(key)) for n in peers]
        lines.append(f"| {measure} | {target} | {f(cp.get(key))} | {f(basev) if basev is not None else '—'} | "
                     + " | ".join(vals) + (" | " if peers else "") + verdict(ok, why) + " |")

    def ratio(a, b):
        return a / b if (a is not None and b) else None

    thr = ratio(cp.get("rps64"), base.get("rps64"))
    row("hot fetch throughput, 64 conns (req/s)", "≥ 0.85 × baseline", "rps64", base.get("rps64"),
        None if thr is None else thr >= 0.85, f"{thr:.2f} × baseline" if thr else "")
    for c in ("1", "64"):
        row(f"hot fetch p50, {c} conn (µs)", "(p99 is the target)", f"p50_{c}", base.get(f"p50_{c}"),
            None, f"{ratio(cp.get(f'p50_{c}'), base.get(f'p50_{c}')) or 0:.2f} × baseline (informational)")
        r = ratio(cp.get(f"p99_{c}"), base.get(f"p99_{c}"))
        row(f"hot fetch p99, {c} conn (µs)", "≤ 1.2 × baseline", f"p99_{c}", base.get(f"p99_{c}"),
            None if r is None else r <= 1.2, f"{r:.2f} × baseline" if r else "")
    for mode, label in (("inplace", "in place"), ("atomic", "atomic rename")):
        p50, p99 = cp.get(f"reload_{mode}_p50"), cp.get(f"reload_{mode}_p99")
        row(f"reload propagation, {label}, p50 (ms)", "≤ 30 ms", f"reload_{mode}_p50", None,
            None if p50 is None else p50 <= 30)
        row(f"reload propagation, {label}, p99 (ms)", "≤ 100 ms", f"reload_{mode}_p99", None,
            None if p99 is None else p99 <= 100,
            f"{cp.get(f'reload_{mode}_timeouts', 0)} of {args.writes} writes never seen" if cp.get(f"reload_{mode}_timeouts") else "")
    mib = lambda v: fmt(v / MIB, " MiB", 1) if v is not None else "n/a"
    rs = cp.get("rss_start")
    row("RSS after start", "≤ 12 MiB", "rss_start", base.get("rss_start"), None if rs is None else rs <= 12 * MIB, f=mib)
    r1 = cp.get("rss_1m")
    row(f"RSS after ≥ 1M requests ({fmt(cp.get('requests_total'))} served)", "≤ 20 MiB", "rss_1m",
        base.get("rss_1m"), None if r1 is None else r1 <= 20 * MIB, f=mib)
    cs = cp.get("idle_cs")
    row(f"context switches while idle, {args.idle} s", "0 (no wake-ups of its own)", "idle_cs",
        base.get("idle_cs"), None if cs is None else cs == 0)
    su = cp.get("startup")
    row(f"start to first 200, median of {args.startups} (ms)", "≤ 20 ms", "startup", base.get("startup"),
        None if su is None else su <= 20)
    eo = cp.get("exec_overhead")
    row(f"`exec -- true` minus `true`, runtime dir on disk (ms; `true` {fmt(cp.get('true_ms'))} ms)", "≤ 15 ms",
        "exec_overhead", None, None if eo is None else eo <= 15)
    et = cp.get("exec_overhead_tmpfs")
    row(f"`exec -- true` minus `true`, runtime dir on tmpfs as in production (ms)", "≤ 15 ms",
        "exec_overhead_tmpfs", None, None if et is None else et <= 15)
    sr = cp.get("scale_reload_p50")
    row(f"scale ({args.profiles} profiles, {args.projects} projects): reload, p50 (ms)", "≤ 50 ms",
        "scale_reload_p50", None, None if sr is None else sr <= 50)
    row("scale: reload, p99 (ms)", "(p50 is the target)", "scale_reload_p99", None, None, "informational")
    row("scale: time to listening (ms)", "(informational)", "scale_listen_ms", None, None, "informational")
    sm = cp.get("scale_rss")
    row("scale: RSS after reloads and load", "≤ 40 MiB", "scale_rss", None, None if sm is None else sm <= 40 * MIB, f=mib)
    for c in ("1", "64"):
        r = ratio(cp.get(f"scale_p99_{c}"), cp.get(f"p99_{c}"))
        row(f"scale: hot p99, {c} conn (µs)", "unchanged (≤ 1.2 × small config)", f"scale_p99_{c}", None,
            None if r is None else r <= 1.2, f"{r:.2f} × small config" if r else "")
    n1 = cp.get("cold_sts_first")
    row(f"cold: STS calls for {args.cold_conc} concurrent first requests", "exactly 1", "cold_sts_first", None,
        None if n1 is None else (n1 == 1 and cp.get("cold_first_ok") == args.cold_conc),
        f"{cp.get('cold_first_ok')}/{args.cold_conc} answered 200" if n1 is not None else "")
    row(f"cold: slowest first request (ms; STS delayed {fmt(args.sts_delay * 1e3)} ms)", "(informational)",
        "cold_first_max", None, None, "informational")
    am = cp.get("cold_after_max")
    row("cold: slowest of 200 later requests (ms)", f"< STS delay", "cold_after_max", None,
        None if am is None else am < args.sts_delay * 1e3)
    rm = cp.get("cold_refresh_max")
    row(f"refresh ahead: slowest of {args.cold_conc} requests when due (ms)", "< STS delay", "cold_refresh_max", None,
        None if rm is None else (rm < args.sts_delay * 1e3 and cp.get("cold_refresh_ok") == args.cold_conc),
        "" if rm is None else f"{cp.get('cold_refresh_ok')}/{args.cold_conc} answered 200")
    row("refresh ahead: STS calls it caused", "exactly 1 (in the background)", "cold_sts_refresh", None,
        None if cp.get("cold_sts_refresh") is None else cp.get("cold_sts_refresh") == 1)
    return "\n".join(lines)


def write_doc(table):
    path = os.path.join(ROOT, "docs/PERFORMANCE.md")
    text = open(path).read() if os.path.exists(path) else f"# Performance\n\n{BEGIN}\n{END}\n"
    if BEGIN not in text or END not in text:
        text += f"\n{BEGIN}\n{END}\n"
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    with open(path + ".tmp", "w") as f:
        f.write(f"{head}{BEGIN}\n{table}\n{END}{tail}")
    os.replace(path + ".tmp", path)


# --------------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--credport", required=True)
    ap.add_argument("--baseline", required=True)
    ap.add_argument("--peer", action="append", default=[], help="another binary speaking the protocol (repeatable)")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    ap.add_argument("--requests", type=int, default=1_000_000)
    ap.add_argument("--writes", type=int, default=200)
    ap.add_argument("--idle", type=int, default=30)
    ap.add_argument("--startups", type=int, default=20)
    ap.add_argument("--exec-runs", type=int, default=50)
    ap.add_argument("--profiles", type=int, default=5000)
    ap.add_argument("--projects", type=int, default=500)
    ap.add_argument("--scale-writes", type=int, default=50)
    ap.add_argument("--cold-conc", type=int, default=64)
    ap.add_argument("--sts-delay", type=float, default=0.25)
    ap.add_argument("--sts-lifetime", type=int, default=130)
    ap.add_argument("--refresh-wait", type=int, default=67, help="0 skips the refresh-ahead check")
    ap.add_argument("--only", default="", help="comma list of: hot,reload,idle,startup,exec,scale,cold")
    ap.add_argument("--no-doc", action="store_true")
    ap.add_argument("--label", default="", help="what the credport binary is (default: the tree's commit)")
    ap.add_argument("--command", default="scripts/bench")
    args = ap.parse_args()
    only = set(filter(None, args.only.split(",")))
    want = lambda p: not only or p in only

    os.makedirs(os.path.join(ROOT, ".cache/bench"), exist_ok=True)
    work = tempfile.mkdtemp(prefix="credport-bench-")
    targets = [{"name": "credport", "bin": os.path.abspath(args.credport)}]
    for p in args.peer:
        targets.append({"name": os.path.basename(p) if os.path.basename(p) != "credport" else p, "bin": os.path.abspath(p)})
    R = {"machine": machine_info(), "targets": targets, "by": {t["name"]: {} for t in targets}, "baseline": {}}
    log(f"work dir {work}; machine {R['machine']}")
    servers = {}
    moto = None
    try:
        # ---- one long-running daemon per target, plus the baseline -----------------------
        homes = {}
        for t in targets:
            h = Home(work, f"main-{t['name'].replace('/', '_')}", t["bin"])
            h.write(".aws/credentials", credentials_text({PROFILE: session_keys("start")}))
            small_config(h)
            t["token"] = h.token()
            homes[t["name"]] = h
            servers[t["name"]] = Server([t["bin"], "serve", "--listen", "127.0.0.1:0"], h.env(), work, t["name"])
        path = f"/v1/credentials/{PROJECT}/{STAGE}"
        time.sleep(1.0)
        for t in targets:
            R["by"][t["name"]]["rss_start"] = servers[t["name"]].rss()
        st, body = get_once(servers["credport"].addr, targets[0]["token"], path)
        assert st == 200, (st, body)
        body_file = os.path.join(work, "body.json")
        open(body_file, "wb").write(body)
        log(f"credport answers {len(body)} bytes")
        b = Server([args.baseline, "--body-file", body_file], os.environ.copy(), work, "baseline")
        servers["baseline"] = b
        base_token = b.stderr_token
        time.sleep(1.0)
        R["baseline"]["rss_start"] = b.rss()
        st, bbody = get_once(b.addr, base_token, path)
        assert st == 200 and len(bbody) == len(body), (st, len(bbody), len(body))
        all_t = targets + [{"name": "baseline", "token": base_token}]
        for t in targets:
            st, _ = get_once(servers[t["name"]].addr, t["token"], path)
            assert st == 200, (t["name"], st)

        if want("idle"):
            log(f"idle: {args.idle} s, all servers at once")
            time.sleep(1.0)
            c0 = {t["name"]: servers[t["name"]].ctx_switches() for t in all_t}
            time.sleep(args.idle)
            for t in all_t:
                d = servers[t["name"]].ctx_switches() - c0[t["name"]]
                (R["baseline"] if t["name"] == "baseline" else R["by"][t["name"]])["idle_cs"] = d
            log(f"idle context switches: { {t['name']: (R['baseline'] if t['name'] == 'baseline' else R['by'][t['name']])['idle_cs'] for t in all_t} }")

        if want("hot"):
            samples = {t["name"]: [] for t in all_t}
            for rep in range(args.reps):
                for t in all_t:
                    url = servers[t["name"]].url(path)
                    r64 = wrk(url, t["token"], 64, args.duration)
                    r1 = wrk(url, t["token"], 1, args.duration)
                    samples[t["name"]].append((r64, r1))
                    log(f"hot rep {rep + 1}/{args.reps} {t['name']}: {r64['rps']:.0f} req/s @64, "
                        f"p99 {r64['p99_us']:.0f} µs @64, p99 {r1['p99_us']:.0f} µs @1"
                        + (f", non-2xx {r64['non2xx'] + r1['non2xx']}" if r64['non2xx'] + r1['non2xx'] else ""))
            for t in all_t:
                d = R["baseline"] if t["name"] == "baseline" else R["by"][t["name"]]
                s = samples[t["name"]]
                d["rps64"] = median([a["rps"] for a, _ in s])
                d["rps1"] = median([b_["rps"] for _, b_ in s])
                for c, idx in (("64", 0), ("1", 1)):
                    d[f"p50_{c}"] = median([x[idx]["p50_us"] for x in s])
                    d[f"p99_{c}"] = median([x[idx]["p99_us"] for x in s])
                d["requests_total"] = sum(a["requests"] + b_["requests"] for a, b_ in s)
                d["non2xx"] = sum(a["non2xx"] + b_["non2xx"] for a, b_ in s)
                d["raw_hot"] = s
            # Top up to the request count (not the baseline's: it is there for comparison), then RSS.
            for t in all_t:
                d = R["baseline"] if t["name"] == "baseline" else R["by"][t["name"]]
                while t["name"] != "baseline" and d["requests_total"] < args.requests:
                    left = args.requests - d["requests_total"]
                    secs = max(2, min(60, int(left / max(d["rps64"] or 1000, 1000)) + 1))
                    r = wrk(servers[t["name"]].url(path), t["token"], 64, secs)
                    d["requests_total"] += r["requests"]
                    d["non2xx"] += r["non2xx"]
                time.sleep(1.0)
                d["rss_1m"] = servers[t["name"]].rss()
                log(f"{t['name']}: {d['requests_total']} requests, RSS {d['rss_1m'] / MIB:.1f} MiB")

        if want("reload"):
            for t in targets:
                for mode in ("inplace", "atomic"):
                    r = reload_propagation(homes[t["name"]], servers[t["name"]].addr, t["token"], mode,
                                           args.writes, {})
                    d = R["by"][t["name"]]
                    d[f"reload_{mode}_p50"], d[f"reload_{mode}_p99"] = r["p50_ms"], r["p99_ms"]
                    d[f"reload_{mode}_timeouts"] = r["timeouts"]
                    log(f"reload {t['name']} {mode}: {r}")

        if want("exec"):
            # Twice: the runtime dir on disk (as in these temporary HOMEs) and on tmpfs, where
            # it is in production ($XDG_RUNTIME_DIR = /run/user/UID). exec writes its per-run
            # files there.
            shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
            for t in targets:
                for variant, base_dir in (("disk", None), ("tmpfs", shm)):
                    if variant == "tmpfs" and not base_dir:
                        continue
                    h = Home(work, f"exec-{variant}-{t['name'].replace('/', '_')}", t["bin"])
                    if base_dir:
                        rd = tempfile.mkdtemp(prefix="credport-bench-run-", dir=base_dir)
                        h.extra["CREDPORT_RUNTIME_DIR"] = rd
                    h.write(".aws/credentials", credentials_text({PROFILE: session_keys("exec")}))
                    small_config(h)
                    h.token()
                    s = Server([t["bin"], "serve", "--listen", "127.0.0.1:0"], h.env(), work, f"exec-{t['name']}")
                    try:
                        r = hyperfine_exec(t["bin"], h.env(), args.exec_runs, work)
                    finally:
                        s.stop()
                        if base_dir:
                            shutil.rmtree(rd, ignore_errors=True)
                    if r:
                        sfx = "" if variant == "disk" else "_tmpfs"
                        R["by"][t["name"]].update({f"exec_overhead{sfx}": r["overhead_ms"], f"true_ms{sfx}": r["true_ms"],
                                                   f"exec_ms{sfx}": r["exec_ms"]})
                    log(f"exec ({variant} runtime dir) {t['name']}: {r}")

        for n in list(servers):
            servers.pop(n).stop()

        if want("startup"):
            for t in targets:
                h = Home(work, f"startup-{t['name'].replace('/', '_')}", t["bin"])
                h.write(".aws/credentials", credentials_text({PROFILE: session_keys("start")}))
                small_config(h)
                tok = h.token()
                r = startup(lambda: [t["bin"], "serve", "--listen", "127.0.0.1:0"], h.env(), work, t["name"],
                            lambda s: tok, path, args.startups)
                R["by"][t["name"]]["startup"] = r["median_ms"]
                log(f"startup {t['name']}: {r}")
            r = startup(lambda: [args.baseline, "--body-file", body_file], os.environ.copy(), work, "baseline",
                        lambda s: s.stderr_token, path, args.startups)
            R["baseline"]["startup"] = r["median_ms"]
            log(f"startup baseline: {r}")

        if want("scale"):
            for t in targets:
                h, creds = scale_home(work, t["name"].replace("/", "_"), t["bin"], args.profiles, args.projects)
                tok = h.token()
                s = Server([t["bin"], "serve", "--listen", "127.0.0.1:0"], h.env(), work, f"scale-{t['name']}")
                servers["scale"] = s
                d = R["by"][t["name"]]
                d["scale_listen_ms"] = (time.perf_counter() - s.t0) * 1e3
                st, _ = get_once(s.addr, tok, path)
                assert st == 200, st
                base_profiles = {k: v for k, v in creds.items() if k != PROFILE}
                r = reload_propagation(h, s.addr, tok, "atomic", args.scale_writes, base_profiles)
                d["scale_reload_p50"], d["scale_reload_p99"] = r["p50_ms"], r["p99_ms"]
                log(f"scale reload {t['name']}: {r}")
                p1, p64 = [], []
                for _ in range(max(1, min(args.reps, 3))):
                    a = wrk(s.url(path), tok, 64, args.duration)
                    b_ = wrk(s.url(path), tok, 1, args.duration)
                    p64.append(a["p99_us"])
                    p1.append(b_["p99_us"])
                d["scale_p99_64"], d["scale_p99_1"] = median(p64), median(p1)
                time.sleep(1.0)
                d["scale_rss"] = s.rss()
                log(f"scale {t['name']}: p99 {d['scale_p99_1']} µs @1, {d['scale_p99_64']} µs @64, RSS {d['scale_rss'] / MIB:.1f} MiB")
                servers.pop("scale").stop()

        if want("cold"):
            moto, moto_port = start_moto(work)
            for t in targets:
                r = cold_path(t["bin"], work, t["name"].replace("/", "_"), moto_port, args.sts_delay,
                              args.sts_lifetime, args.refresh_wait, args.cold_conc)
                d = R["by"][t["name"]]
                d.update(cold_sts_first=r["sts_calls_first"], cold_first_ok=r["first_ok"],
                         cold_first_max=r["first_max_ms"], cold_after_max=r["after_max_ms"],
                         cold_after_p50=r["after_p50_ms"])
                if "refresh_ok" in r:
                    d.update(cold_refresh_ok=r["refresh_ok"], cold_refresh_max=r["refresh_max_ms"],
                             cold_sts_refresh=r["sts_calls_refresh"])
                log(f"cold {t['name']}: {r}")
    finally:
        for s in servers.values():
            s.stop()
        if moto:
            moto.kill()
            moto.wait()
        stamp = time.strftime("%Y%m%d-%H%M%S")
        raw = os.path.join(ROOT, f".cache/bench/results-{stamp}.json")
        with open(raw, "w") as f:
            json.dump({"args": vars(args), **R}, f, indent=1, default=str)
        log(f"raw results: {raw}")
        shutil.rmtree(work, ignore_errors=True)

    table = render(R, args, args.command)
    print(table)
    if not args.no_doc:
        write_doc(table)
        log("docs/PERFORMANCE.md updated")


if __name__ == "__main__":
    main()
