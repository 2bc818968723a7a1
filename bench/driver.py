#!/usr/bin/env python3
"""credport's benchmark driver (run by scripts/bench; Python 3 standard library only).

Measures, side by side in one run, credport (and any peer) against bench/baseline, prints
markdown tables of medians and writes them into docs/PERFORMANCE.md between the bench
markers. Raw numbers go to .cache/bench/.

credport is measured on two scopes: a project declared in config.toml and a project
registered by directory (`credport project add DIR`, a serverless.yml mapping the stage).

Two kinds of peer:

--peer BIN: a binary speaking credport's own protocol and CLI (an older credport, a fork):
  BIN serve --listen 127.0.0.1:0      prints `listening on http://ADDR` on stderr
  BIN token --project P --stage S     prints the scope's token on stdout
  BIN exec --project P --stage S -- true
  BIN project add DIR                 registers a project directory (optional)
  files: $HOME/.aws/{credentials,config}, $XDG_CONFIG_HOME/credport/config.toml
         ([projects.P] default_stage/stages), state under $XDG_DATA_HOME,
         runtime under $CREDPORT_RUNTIME_DIR; STS at $AWS_ENDPOINT_URL_STS.
  GET /v1/credentials/P/S with `Authorization: <token>` answers the container JSON.
  Every measurement runs for it.

--peer-cmd NAME=CMD --peer-url NAME=URL [--peer-token NAME=TOKEN] [--peer-label NAME=TEXT]:
  any server of the container-credentials protocol (GET URL with `Authorization: TOKEN`
  answers {"AccessKeyId", "SecretAccessKey", "Token", "Expiration"}). CMD is split like a
  shell line (no shell runs it) and started in its own HOME (also its working directory)
  holding the same AWS files (profile devAccount, session keys). Placeholders in CMD, URL
  and TOKEN: {port} (a free port), {home}, {token} (a random token made for the run),
  {profile}, {root} (the repository); {{ and }} are literal braces. URL or TOKEN `@FILE`
  is read from FILE (relative to {home}) once the peer has written it. TOKEN defaults to
  {token}. The peer is ready when URL answers 200. The hot measures (throughput, latency, server CPU per
  request, RSS), idle wake-ups and start-up run for it; the rest needs credport's CLI and
  is shown as "—". Its server is the started process and every process it starts (also
  ones that detach: the driver is their subreaper).
"""

import argparse
import concurrent.futures
import datetime as dt
import http.client
import http.server
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
MIB = 1024 * 1024
PROJECT, STAGE, PROFILE = "bench", "dev", "devAccount"
# The project registered by directory (a serverless.yml), served next to the declared one.
REG_PROJECT = "benchreg"
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"
CMP_BEGIN, CMP_END = "<!-- bench:compare:begin -->", "<!-- bench:compare:end -->"
CLK_TCK = os.sysconf("SC_CLK_TCK")
# CPUs for the load generator and for the servers (set in main; None: not pinned).
PIN = {"load": None, "server": None}


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
        out = subprocess.run([self.bin, "token", "--project", project, "--stage", stage], env=self.env(),
                             stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
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


def small_config(home, project=PROJECT, profile=PROFILE, trust=False):
    text = f'[projects.{project}]\ndefault_stage = "dev"\nstages = {{ dev = "{profile}" }}\n'
    home.write(".config/credport/config.toml", trust_section(trust) + text)


def trust_section(trust):
    # credport may ask before it uses a project file's stage mapping (`credport allow`);
    # "all" trusts every project file, which this HOME's registered project needs. Only
    # written for binaries that know it (`BIN allow --help` exits 0): config.toml's
    # unknown keys are errors.
    return '[trust]\nproject_files = "all"\n\n' if trust else ""


def knows_trust(bin_path):
    r = subprocess.run([bin_path, "allow", "--help"], stdin=subprocess.DEVNULL, capture_output=True, timeout=30,
                       env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")})
    return r.returncode == 0


SERVERLESS_YML = """\
service: {project}
custom:
  myStage: ${{opt:stage, self:provider.stage}}
  myProfile:
    dev: {profile}
provider:
  name: aws
  stage: dev
  profile: ${{self:custom.myProfile.${{self:custom.myStage}}}}
"""


def register_project(home, project=REG_PROJECT, profile=PROFILE):
    """A project directory holding a serverless.yml (README's per-stage map, stage dev ->
    `profile`), registered with `BIN project add DIR` as a user (or `exec`) would."""
    d = os.path.join(home.dir, "src", project)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "serverless.yml"), "w") as f:
        f.write(SERVERLESS_YML.format(project=project, profile=profile))
    cmd = [home.bin, "project", "add", d]
    r = subprocess.run(cmd, env=home.env(), stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        raise RuntimeError(f"`{' '.join(cmd)}` failed ({r.returncode}): {r.stderr.strip()}")
    return d


# --------------------------------------------------------------------------------------
# Processes: pinning, process trees, servers


def pinned(cmd, which):
    """`cmd` run on the CPUs chosen for `which` ("load" or "server"), through taskset
    (which execs it: the pid stays the command's)."""
    cpus = PIN[which]
    if not cpus:
        return cmd
    return ["taskset", "-c", ",".join(str(c) for c in sorted(cpus)), *cmd]


def become_subreaper():
    """Makes the driver the reaper of its descendants' orphans (PR_SET_CHILD_SUBREAPER), so
    a peer's detached helper (an agent it starts) stays findable as the driver's child."""
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(36, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def proc_stat(pid):
    """(ppid, utime + stime in clock ticks) of a process, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            s = f.read()
    except OSError:
        return None
    rest = s[s.rindex(")") + 2:].split()
    return int(rest[1]), int(rest[11]) + int(rest[12])


def children_of():
    kids = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            st = proc_stat(d)
            if st:
                kids.setdefault(st[0], []).append(int(d))
    return kids


def own_children():
    return set(children_of().get(os.getpid(), []))


def proc_tree(roots):
    """The live processes among `roots` and all their descendants."""
    kids = children_of()
    out, stack, seen = [], list(roots), set()
    while stack:
        p = stack.pop()
        if p in seen or proc_stat(p) is None:
            continue
        seen.add(p)
        out.append(p)
        stack.extend(kids.get(p, []))
    return out


def proc_status(pid, field):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class Proc:
    """A started server process (in its own session) and the processes it starts."""

    def _spawn(self, cmd, env, logdir, name, cwd=None, pin=True):
        self.name = name
        self.logpath = os.path.join(logdir, f"{name}-{time.monotonic_ns()}.log")
        self.log = open(self.logpath, "wb")
        self.cmd = cmd
        before = own_children()
        self.t0 = time.perf_counter()
        self.proc = subprocess.Popen(pinned(cmd, "server") if pin else cmd, env=env, stdin=subprocess.DEVNULL,
                                     stdout=self.log, stderr=self.log, start_new_session=True, cwd=cwd)
        self.pid = self.proc.pid
        self._before = before | {self.pid}
        self.adopted = set()

    def _adopt(self):
        """Orphans re-parented to the driver since this server started are its helpers."""
        self.adopted |= own_children() - self._before

    def _log_tail(self):
        try:
            with open(self.logpath, "rb") as f:
                return f.read().decode(errors="replace")[-2000:]
        except OSError:
            return ""

    def pids(self):
        return proc_tree([self.pid, *self.adopted])

    def stop(self):
        pids = [p for p in self.adopted if proc_stat(p)]
        if self.proc.poll() is None:
            try:
                os.killpg(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.pid, signal.SIGKILL)
                self.proc.wait()
        for p in pids:
            try:
                os.kill(p, signal.SIGTERM)
            except ProcessLookupError:
                continue
        deadline = time.monotonic() + 5
        for p in pids:
            while True:
                try:
                    done, _ = os.waitpid(p, os.WNOHANG)
                except ChildProcessError:
                    break
                if done:
                    break
                if time.monotonic() > deadline:
                    os.kill(p, signal.SIGKILL)
                    os.waitpid(p, 0)
                    break
                time.sleep(0.01)
        self.log.close()

    def rss(self):
        return sum(proc_status(p, "VmRSS") for p in self.pids()) * 1024

    def peak_rss(self):
        """Sum of the processes' VmHWM (each one's peak resident set)."""
        return sum(proc_status(p, "VmHWM") for p in self.pids()) * 1024

    def cpu_ticks(self):
        return sum((proc_stat(p) or (0, 0))[1] for p in self.pids())

    def task_switches(self):
        """{(tid, start time): voluntary + nonvoluntary context switches} of every task
        (thread) of the server's processes. The start time (field 22 of the task's `stat`)
        tells a reused TID from the task that had it."""
        out = {}
        for pid in self.pids():
            try:
                tids = os.listdir(f"/proc/{pid}/task")
            except OSError:
                continue
            for tid in tids:
                try:
                    with open(f"/proc/{pid}/task/{tid}/stat") as f:
                        st = f.read()
                    n = 0
                    with open(f"/proc/{pid}/task/{tid}/status") as f:
                        for line in f:
                            if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                                n += int(line.split()[1])
                except OSError:
                    continue  # exited between listing and reading: not there at this sample
                out[(int(tid), int(st[st.rindex(")") + 2:].split()[19]))] = n
        return out


def wakeups(before, after):
    """The wake-ups between two `task_switches` samples, as (total, detail). A task in both
    counts its switches in between. A task that appeared counts its switches, at least 1
    (it was created and ran). A task that exited counts 1: it had to run to exit, and what it
    did after the first sample left with it (a lower bound). Summing the process totals
    instead loses an exited thread's whole count and can come out negative."""
    kept = sum(max(0, n - before[k]) for k, n in after.items() if k in before)
    new = [k for k in after if k not in before]
    gone = [k for k in before if k not in after]
    appeared = sum(max(1, after[k]) for k in new)
    total = kept + appeared + len(gone)
    return total, {"switches": kept, "appeared": len(new), "appeared_switches": appeared,
                   "exited": len(gone)}


class Server(Proc):
    """A running server printing `listening on http://ADDR` on stderr: credport-like
    (`BIN serve`) or the baseline."""

    def __init__(self, cmd, env, logdir, name, pin=True):
        self._spawn(cmd, env, logdir, name, pin=pin)
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

    def url(self, path):
        return f"http://{self.addr}{path}"


def expand(template, values, what):
    try:
        return template.format_map(values)
    except (KeyError, IndexError, ValueError) as e:
        raise SystemExit(f"bench: {what} {template!r}: unknown or malformed placeholder {e} "
                         f"(known: {', '.join('{' + k + '}' for k in values)})")


class PeerServer(Proc):
    """A generic container-credentials server started from a --peer-cmd template. Ready
    when its URL answers 200 with credentials; `ready_ms` is spawn to that first 200."""

    def __init__(self, spec, home, logdir, timeout=60, pin=True):
        port = free_port()
        values = {"port": port, "home": home.dir, "token": spec["secret"], "profile": PROFILE, "root": ROOT}
        cmd = [expand(a, values, f"--peer-cmd {spec['name']}") for a in shlex.split(spec["cmd"])]
        self._spawn(cmd, home.env(), logdir, spec["name"], cwd=home.dir, pin=pin)
        self.full_url = self.token = None
        last = "no answer"
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"peer {spec['name']} exited ({self.proc.returncode}) before answering; "
                                   f"command {cmd}; its output:\n{self._log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"peer {spec['name']} did not answer 200 within {timeout} s ({last}); "
                                   f"command {cmd}; its output:\n{self._log_tail()}")
            url = self._value(spec["url_template"], values, home, "--peer-url")
            token = self._value(spec["token_template"], values, home, "--peer-token")
            if url is None or token is None:
                last = "waiting for its URL/token file"
                time.sleep(0.01)
                continue
            try:
                status, body = get_url(url, token, timeout=5)
            except OSError as e:
                last = f"GET {url}: {e}"
                time.sleep(0.0002)
                continue
            if status == 200 and b"AccessKeyId" in body:
                self.ready_ms = (time.perf_counter() - self.t0) * 1e3
                self.full_url, self.token, self.body_len = url, token, len(body)
                break
            last = f"GET {url}: HTTP {status}"
            time.sleep(0.05)
        time.sleep(0.2)
        self._adopt()

    @staticmethod
    def _value(template, values, home, what):
        v = expand(template, values, f"{what}")
        if not v.startswith("@"):
            return v
        path = os.path.join(home.dir, v[1:])
        try:
            with open(path) as f:
                text = f.read().strip()
        except OSError:
            return None
        return text or None


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


def get_url(url, token, timeout=10):
    u = urllib.parse.urlsplit(url)
    path = u.path or "/"
    if u.query:
        path += "?" + u.query
    return get_once(u.netloc, token, path, timeout)


# --------------------------------------------------------------------------------------
# Load (wrk)


def parse_wrk_time(s):
    m = re.match(r"([\d.]+)(us|ms|s|m)$", s)
    v, u = float(m.group(1)), m.group(2)
    return v * {"us": 1, "ms": 1e3, "s": 1e6, "m": 6e7}[u]


# The hot measures compared round by round: (result key, connections, sample index,
# wrk result field).
PAIRED = [("rps64", "64", 0, "rps"), ("rps1", "1", 1, "rps"), ("p50_64", "64", 0, "p50_us"),
          ("p99_64", "64", 0, "p99_us"), ("p99_1", "1", 1, "p99_us"), ("cpu64", "64", 0, "cpu_us")]


def wrk(url, token, conns, duration, threads=None, server=None):
    """One wrk run (on the load CPU when pinned). With `server`, also the server's CPU time
    over the run (utime + stime of its processes, /proc/PID/stat) per request, in µs."""
    threads = threads or (1 if PIN["load"] and len(PIN["load"]) == 1 else min(conns, 2))
    cmd = ["wrk", f"-t{threads}", f"-c{conns}", f"-d{duration}s", "--latency",
           "-H", f"Authorization: {token}", url]
    c0 = server.cpu_ticks() if server else None
    out = subprocess.run(pinned(cmd, "load"), capture_output=True, text=True, timeout=duration + 60).stdout
    c1 = server.cpu_ticks() if server else None
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
    res["cpu_us"] = ((c1 - c0) / CLK_TCK * 1e6 / res["requests"]) if server and res["requests"] else None
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
        # Not pinned: taskset's own exec would be counted in the start-up.
        s = Server(cmd_fn(), env, logdir, name, pin=False)
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


def startup_peer(spec, home, logdir, reps):
    """Spawn to first 200 of a generic peer (its readiness check is that first 200)."""
    times = []
    for _ in range(reps):
        s = PeerServer(spec, home, logdir, pin=False)
        times.append(s.ready_ms)
        s.stop()
        os.unlink(s.logpath)
    return {"median_ms": median(times), "min_ms": min(times), "n": reps}


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


def scale_home(work, name, bin_path, n_profiles, n_projects, trust=False, registered=True):
    """5,000 profiles, 500 declared projects, plus the bench project declared and (with
    `registered`) the benchreg project registered by directory, as in the small HOME."""
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
    home.write(".config/credport/config.toml", trust_section(trust) + "\n".join(toml))
    creds[PROFILE] = session_keys("scale0")
    home.write(".aws/credentials", credentials_text(creds))
    if registered:
        register_project(home)
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
    targets = R["targets"]
    names = [t["name"] for t in targets]
    peers = names[1:]
    generic = {t["name"] for t in targets if t["kind"] == "generic"}
    cp = R["by"]["credport"]
    base = R["baseline"]
    lines = []
    mi = R["machine"]
    pin = R.get("pin")
    pin_text = (f"wrk pinned to CPU {','.join(map(str, pin['load']))}, every server to CPU "
                f"{','.join(map(str, pin['server']))} (taskset)" if pin else "nothing pinned")
    lines.append(f"Run {mi['date']}, credport {args.label or 'at commit ' + mi['commit']}. Machine: {mi['nproc']} CPUs, {mi['cpu']}, "
                 f"{mi['kernel']}, {mi['rustc']}, {mi['wrk']}, {mi['hyperfine']}, load average at start "
                 f"{mi['loadavg_at_start']}; {pin_text}. **A shared, noisy machine**: other builds and tests ran at the "
                 f"same time, so absolute numbers move between runs; medians of {args.reps} repetitions and "
                 f"the ratios to the baseline measured in the same run are what count.")
    lines.append("")
    lines.append("Command: `" + command + "`")
    lines.append("")
    hdr = "| measure | target | credport | baseline | " + " | ".join(peers) + (" | " if peers else "") + "verdict |"
    lines.append(hdr)
    lines.append("|" + "---|" * (5 + len(peers)))

    def row(measure, target, key, basev, ok, why="", f=fmt, cli=True):
        # cli: the measure needs credport's CLI (or its registered scope), so a generic
        # peer has no value ("—"); the hot measures run for every peer.
        vals = ["—" if cli and n in generic else f(R["by"][n].get(key)) for n in peers]
        lines.append(f"| {measure} | {target} | {f(cp.get(key))} | {f(basev) if basev is not None else '—'} | "
                     + " | ".join(vals) + (" | " if peers else "") + verdict(ok, why) + " |")

    def ratio(a, b):
        return a / b if (a is not None and b) else None

    def by_rounds(rounds, value, ref, ok, what):
        # The verdict reads the median of the per-round ratios (each round's value over the
        # reference's in the same round), with the ratio of the medians shown beside it;
        # results from before per-round ratios have only the latter.
        rounds = [x for x in rounds or [] if x is not None]
        of_medians = ratio(value, ref)
        if rounds:
            r = median(rounds)
            why = f"{r:.2f} × {what} per round" + (f"; medians {of_medians:.2f} ×" if of_medians else "")
        else:
            r, why = of_medians, (f"{of_medians:.2f} × {what}" if of_medians else "")
        return (None if r is None else ok(r)), why

    def judged(key, basekey, pre, ok):
        return by_rounds(cp.get(f"{pre}round_ratios_{key}"), cp.get(pre + key), base.get(basekey), ok, "baseline")

    def at_least(key, basekey, limit, pre=""):
        return judged(key, basekey, pre, lambda r: r >= limit)

    def at_most(key, basekey, limit, pre=""):
        return judged(key, basekey, pre, lambda r: r <= limit)

    us = lambda v: fmt(v, "", 1) if isinstance(v, float) and v < 100 else fmt(v)
    mib = lambda v: fmt(v / MIB, " MiB", 1) if v is not None else "n/a"
    for pre, scope, cli in (("", "", False), ("reg_", ", registered directory", True)):
        if pre and not any(R["by"][n].get("reg_rps64") for n in names):
            continue
        row(f"hot fetch throughput, 64 conns{scope} (req/s)", "≥ 0.85 × baseline", pre + "rps64", base.get("rps64"),
            *at_least("rps64", "rps64", 0.85, pre), cli=cli)
        row(f"single client throughput, 1 conn{scope} (req/s)", "≥ 0.95 × baseline", pre + "rps1", base.get("rps1"),
            *at_least("rps1", "rps1", 0.95, pre), cli=cli)
        for c in ("1", "64"):
            if c == "1":
                r = ratio(cp.get(f"{pre}p50_1"), base.get("p50_1"))
                row(f"hot fetch p50, 1 conn{scope} (µs)", "(p99 is the target)", f"{pre}p50_1", base.get("p50_1"),
                    None, f"{r:.2f} × baseline (informational)" if r else "informational", cli=cli)
            else:
                row(f"hot fetch p50, 64 conns{scope} (µs)", "≤ 1.2 × baseline", f"{pre}p50_64", base.get("p50_64"),
                    *at_most("p50_64", "p50_64", 1.2, pre), cli=cli)
            row(f"hot fetch p99, {c} conn{'s' if c != '1' else ''}{scope} (µs)", "≤ 1.2 × baseline", f"{pre}p99_{c}",
                base.get(f"p99_{c}"), *at_most(f"p99_{c}", f"p99_{c}", 1.2, pre), cli=cli)
        row(f"server CPU per request, 64 conns{scope} (µs)", "≤ 1.25 × baseline", pre + "cpu64", base.get("cpu64"),
            *at_most("cpu64", "cpu64", 1.25, pre), f=us, cli=cli)
    for mode, label in (("inplace", "in place"), ("atomic", "atomic rename")):
        p50, p99 = cp.get(f"reload_{mode}_p50"), cp.get(f"reload_{mode}_p99")
        row(f"reload propagation, {label}, p50 (ms)", "≤ 30 ms", f"reload_{mode}_p50", None,
            None if p50 is None else p50 <= 30)
        row(f"reload propagation, {label}, p99 (ms)", "≤ 100 ms", f"reload_{mode}_p99", None,
            None if p99 is None else p99 <= 100,
            f"{cp.get(f'reload_{mode}_timeouts', 0)} of {args.writes} writes never seen" if cp.get(f"reload_{mode}_timeouts") else "")
    rs = cp.get("rss_start")
    row("RSS after start", "≤ 12 MiB", "rss_start", base.get("rss_start"), None if rs is None else rs <= 12 * MIB,
        f=mib, cli=False)
    r1 = cp.get("rss_1m")
    row(f"RSS after ≥ 1M requests ({fmt(cp.get('requests_total'))} served)", "≤ 12 MiB", "rss_1m",
        base.get("rss_1m"), None if r1 is None else (r1 <= 12 * MIB and (cp.get("requests_total") or 0) >= args.requests),
        "" if (cp.get("requests_total") or 0) >= args.requests else f"only {fmt(cp.get('requests_total'))} requests",
        f=mib)
    row("peak RSS (VmHWM) after the hot runs", "(informational)", "rss_peak", base.get("rss_peak"), None,
        "informational", f=mib, cli=False)
    cs = cp.get("idle_cs")
    row(f"context switches while idle, {args.idle} s", "0 (no wake-ups of its own)", "idle_cs",
        base.get("idle_cs"), None if cs is None else cs == 0, cli=False)
    su = cp.get("startup")
    row(f"start to first 200, median of {args.startups} (ms)", "≤ 20 ms", "startup", base.get("startup"),
        None if su is None else su <= 20, cli=False)
    eo = cp.get("exec_overhead")
    row(f"`exec -- true` minus `true`, runtime dir on disk (ms; `true` {fmt(cp.get('true_ms'))} ms)", "≤ 15 ms",
        "exec_overhead", None, None if eo is None else eo <= 15)
    et = cp.get("exec_overhead_tmpfs")
    row(f"`exec -- true` minus `true`, runtime dir on tmpfs as in production (ms)", "≤ 15 ms",
        "exec_overhead_tmpfs", None, None if et is None else et <= 15)
    sr = cp.get("scale_reload_p50")
    row(f"scale ({args.profiles} profiles, {args.projects} projects): reload, p50 (ms)", "≤ 50 ms",
        "scale_reload_p50", None, None if sr is None else sr <= 50)
    s99 = cp.get("scale_reload_p99")
    row("scale: reload, p99 (ms)", "≤ 100 ms", "scale_reload_p99", None, None if s99 is None else s99 <= 100)
    row("scale: time to listening (ms)", "(informational)", "scale_listen_ms", None, None, "informational")
    sm = cp.get("scale_rss")
    row("scale: RSS after reloads and load", "≤ 40 MiB", "scale_rss", None, None if sm is None else sm <= 40 * MIB, f=mib)
    for pre, scope in (("", ""), ("reg_", ", registered directory")):
        if pre and cp.get("scale_reg_rps64") is None:
            continue
        def vs_small(key, ok):
            # Against the small configuration's server in the same rounds (older results:
            # the small configuration's hot-run medians).
            return by_rounds(cp.get(f"scale_{pre}round_ratios_{key}"), cp.get(f"scale_{pre}{key}"),
                             cp.get(f"scale_small_{pre}{key}", cp.get(f"{pre}{key}")), ok, "small config")

        row(f"scale: hot throughput, 64 conns{scope} (req/s)", "same cost (≥ 0.83 × small config)",
            f"scale_{pre}rps64", None, *vs_small("rps64", lambda r: r >= 0.83))
        for c in ("1", "64"):
            row(f"scale: hot p99, {c} conn{'s' if c != '1' else ''}{scope} (µs)", "unchanged (≤ 1.2 × small config)",
                f"scale_{pre}p99_{c}", None, *vs_small(f"p99_{c}", lambda r: r <= 1.2))
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
    rounds = [("baseline", base, "")] + [(f"credport{scope}", cp, pre)
                                          for pre, scope in (("", ", declared"), ("reg_", ", registered"))
                                          if cp.get(pre + "raw_hot")]
    if base.get("raw_hot") and len(rounds) > 1:
        n = len(base["raw_hot"])
        lines.append("")
        lines.append("Round by round at 64 connections (req/s; p99 µs; server CPU µs per request), every "
                     "other round in reverse order; the verdicts above read the median of each round's "
                     "ratio to the baseline's same round:")
        lines.append("")
        lines.append("| round | " + " | ".join(str(i + 1) for i in range(n)) + " |")
        lines.append("|---|" + "---|" * n)
        for label, d, pre in rounds:
            cells = [f"{fmt(a['rps'])}; {fmt(a['p99_us'])}; {us(a['cpu_us'])}" for a, _ in d[pre + "raw_hot"]]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    bad = [f"{n}: {R['by'][n].get('non2xx')} non-2xx answers" for n in names if R["by"][n].get("non2xx")]
    if bad:
        lines.append("")
        lines.append("**Non-2xx answers under load** (their throughput is not comparable): " + "; ".join(bad) + ".")
    return "\n".join(lines)


def render_compare(R, args, command):
    """The hot measures, one row per server and scope, with ratios to the baseline: the
    "how credport compares" table."""
    base = R["baseline"]
    mi = R["machine"]
    pin = R.get("pin")
    lines = [f"Run {mi['date']}, credport {args.label or 'at commit ' + mi['commit']}, {mi['nproc']} CPUs ({mi['cpu']}); "
             + (f"wrk pinned to CPU {','.join(map(str, pin['load']))} and each server to CPU "
                f"{','.join(map(str, pin['server']))}" if pin else "nothing pinned (fewer than 2 CPUs, or --no-pin)")
             + f"; `wrk` {args.duration} s runs at 64 and 1 connections, medians of {args.reps} rounds, servers "
             f"interleaved round by round (every other round in reverse order); the same ~{fmt(R.get('body_len'))}-byte credentials body and a token "
             f"check everywhere. Command: `{command}`.", "",
             "| server | req/s @64 | p50 @64 | p99 @64 | req/s @1 | server CPU per request | peak RSS |",
             "|---|---|---|---|---|---|---|"]

    def with_ratio(v, b, f):
        if v is None:
            return "n/a"
        return f(v) + (f" ({v / b:.2f}×)" if b else "")

    def t_us(v):
        if v is None:
            return "n/a"
        return f"{v / 1000:,.2f} ms" if v >= 1000 else f"{v:,.0f} µs"

    def line(label, d, pre=""):
        vals = [with_ratio(d.get(pre + "rps64"), base.get("rps64") if d is not base else None, fmt),
                t_us(d.get(pre + "p50_64")), t_us(d.get(pre + "p99_64")),
                with_ratio(d.get(pre + "rps1"), base.get("rps1") if d is not base else None, fmt),
                with_ratio(d.get(pre + "cpu64"), base.get("cpu64") if d is not base else None,
                           lambda v: f"{v:,.1f} µs"),
                fmt(d["rss_peak"] / MIB, " MiB", 1) if d.get("rss_peak") else "n/a"]
        n2 = d.get(pre + "non2xx")
        if n2:
            label += f" (**{n2:,} non-2xx answers**)"
        lines.append(f"| {label} | " + " | ".join(vals) + " |")

    line("axum baseline (token check + fixed body: the stack's limit)", base)
    for t in R["targets"]:
        d = R["by"][t["name"]]
        if t["kind"] == "generic":
            line(t.get("label") or t["name"], d)
            continue
        who = "credport" if t["name"] == "credport" else f"`{t['name']}`"
        line(f"{who}, project declared in config.toml", d)
        if d.get("reg_rps64") is not None:
            line(f"{who}, project registered by directory (`project add`, serverless.yml)", d, "reg_")
    return "\n".join(lines)


def write_doc(table, begin=BEGIN, end=END):
    path = os.path.join(ROOT, "docs/PERFORMANCE.md")
    text = open(path).read() if os.path.exists(path) else f"# Performance\n\n{begin}\n{end}\n"
    if begin not in text or end not in text:
        text += f"\n{begin}\n{end}\n"
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    with open(path + ".tmp", "w") as f:
        f.write(f"{head}{begin}\n{table}\n{end}{tail}")
    os.replace(path + ".tmp", path)


# --------------------------------------------------------------------------------------


def parse_peers(args):
    """The generic peers of --peer-cmd/--peer-url/--peer-token/--peer-label, by NAME."""
    def pairs(values, flag):
        out = {}
        for v in values:
            name, sep, rest = v.partition("=")
            if not sep or not re.fullmatch(r"[A-Za-z0-9._-]+", name):
                raise SystemExit(f"bench: {flag} {v!r}: expected NAME=VALUE (NAME of A-Z a-z 0-9 . _ -)")
            if name in out:
                raise SystemExit(f"bench: {flag} given twice for {name}")
            out[name] = rest
        return out

    cmds = pairs(args.peer_cmd, "--peer-cmd")
    urls = pairs(args.peer_url, "--peer-url")
    tokens = pairs(args.peer_token, "--peer-token")
    labels = pairs(args.peer_label, "--peer-label")
    for flag, d in (("--peer-url", urls), ("--peer-token", tokens), ("--peer-label", labels)):
        for name in d:
            if name not in cmds:
                raise SystemExit(f"bench: {flag} {name}=...: no --peer-cmd {name}=... was given")
    peers = []
    for name, cmd in cmds.items():
        if name in ("credport", "baseline"):
            raise SystemExit(f"bench: --peer-cmd {name}: the name is taken, choose another")
        if name not in urls:
            raise SystemExit(f"bench: --peer-cmd {name}: give its URL too (--peer-url {name}=http://127.0.0.1:{{port}}/...)")
        if not shlex.split(cmd):
            raise SystemExit(f"bench: --peer-cmd {name}: empty command")
        peers.append({"name": name, "kind": "generic", "cmd": cmd, "url_template": urls[name],
                      "token_template": tokens.get(name, "{token}"), "label": labels.get(name, name),
                      "secret": secrets.token_urlsafe(24)})
    return peers


def peer_home(work, prefix, t):
    """A HOME for one target with the bench's AWS files (and, for credport-like binaries,
    the declared project and the registered project directory)."""
    h = Home(work, f"{prefix}-{t['name'].replace('/', '_')}", t.get("bin"))
    h.write(".aws/credentials", credentials_text({PROFILE: session_keys("start")}))
    if t["kind"] == "generic":
        h.write(".aws/config", f"[profile {PROFILE}]\nregion = us-east-1\n")
        # Nothing of a peer may look for an instance role (link-local traffic, slow start).
        h.extra["AWS_EC2_METADATA_DISABLED"] = "true"
    else:
        small_config(h, trust=t["trust"])
    return h


def start_target(t, h, work, prefix="main"):
    if t["kind"] == "generic":
        return PeerServer(t, h, work)
    return Server([t["bin"], "serve", "--listen", "127.0.0.1:0"], h.env(), work, f"{prefix}-{t['name'].replace('/', '_')}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--credport", required=True)
    ap.add_argument("--baseline", required=True)
    ap.add_argument("--peer", action="append", default=[], metavar="BIN",
                    help="another binary speaking credport's protocol and CLI (repeatable)")
    ap.add_argument("--peer-cmd", action="append", default=[], metavar="NAME=CMD",
                    help="a generic container-credentials server: its start command (repeatable; see above)")
    ap.add_argument("--peer-url", action="append", default=[], metavar="NAME=URL",
                    help="the credentials URL of peer NAME (or @FILE)")
    ap.add_argument("--peer-token", action="append", default=[], metavar="NAME=TOKEN",
                    help="the Authorization value for peer NAME (or @FILE; default {token})")
    ap.add_argument("--peer-label", action="append", default=[], metavar="NAME=TEXT",
                    help="how the tables name peer NAME (default NAME)")
    ap.add_argument("--no-pin", action="store_true",
                    help="do not pin wrk and the servers to separate CPUs (default: pinned with 2+ CPUs)")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    ap.add_argument("--requests", type=int, default=1_000_000)
    ap.add_argument("--writes", type=int, default=200)
    ap.add_argument("--idle", type=int, default=30,
                    help="seconds of the idle wake-ups window (every server started, one request "
                         "each, 1 s settle). Wake-ups are counted per task (thread), keyed by TID "
                         "and start time, from /proc/PID/task/TID/status (voluntary + "
                         "nonvoluntary context switches): a task alive at both ends counts its "
                         "increase, a task that appeared counts its switches (at least 1), a task "
                         "that exited counts 1 (its later switches left with it). Summing process "
                         "totals instead loses an exited thread's count.")
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
    generic_peers = parse_peers(args)

    cpus = sorted(os.sched_getaffinity(0))
    if not args.no_pin and len(cpus) >= 2:
        if shutil.which("taskset"):
            PIN["load"], PIN["server"] = {cpus[0]}, {cpus[1]}
        else:
            log("taskset not found (util-linux): nothing pinned")
    subreaper = become_subreaper()

    os.makedirs(os.path.join(ROOT, ".cache/bench"), exist_ok=True)
    work = tempfile.mkdtemp(prefix="credport-bench-")
    targets = [{"name": "credport", "bin": os.path.abspath(args.credport), "kind": "credport"}]
    for p in args.peer:
        targets.append({"name": os.path.basename(p) if os.path.basename(p) != "credport" else p,
                        "bin": os.path.abspath(p), "kind": "credport"})
    targets += generic_peers
    cli = [t for t in targets if t["kind"] == "credport"]
    for t in cli:
        t["trust"] = knows_trust(t["bin"])
    R = {"machine": machine_info(), "targets": targets, "by": {t["name"]: {} for t in targets}, "baseline": {},
         "pin": {k: sorted(v) for k, v in PIN.items()} if PIN["server"] else None}
    log(f"work dir {work}; machine {R['machine']}; pinning {R['pin']}; subreaper {subreaper}")
    servers = {}
    moto = None
    try:
        # ---- one long-running server per target, plus the baseline -----------------------
        homes = {}
        path = f"/v1/credentials/{PROJECT}/{STAGE}"
        reg_path = f"/v1/credentials/{REG_PROJECT}/{STAGE}"
        for t in targets:
            h = peer_home(work, "main", t)
            homes[t["name"]] = h
            if t["kind"] == "credport":
                t["token"] = h.token()
                try:
                    register_project(h)
                    t["reg_token"] = h.token(REG_PROJECT, STAGE)
                except RuntimeError as e:
                    if t["name"] == "credport":
                        raise
                    log(f"{t['name']}: no registered-directory scope: {e}")
                    t["reg_token"] = None
            servers[t["name"]] = s = start_target(t, h, work)
            if t["kind"] == "generic":
                t["token"], t["url"] = s.token, s.full_url
                log(f"peer {t['name']}: ready in {s.ready_ms:.0f} ms at {s.full_url}, {s.body_len} bytes, "
                    f"processes {s.pids()}")
            else:
                t["url"] = s.url(path)
                t["reg_url"] = s.url(reg_path) if t.get("reg_token") else None
        time.sleep(1.0)
        for t in targets:
            R["by"][t["name"]]["rss_start"] = servers[t["name"]].rss()
        st, body = get_once(servers["credport"].addr, targets[0]["token"], path)
        assert st == 200, (st, body)
        body_file = os.path.join(work, "body.json")
        open(body_file, "wb").write(body)
        R["body_len"] = len(body)
        log(f"credport answers {len(body)} bytes")
        b = Server([args.baseline, "--body-file", body_file], os.environ.copy(), work, "baseline")
        servers["baseline"] = b
        base_token = b.stderr_token
        time.sleep(1.0)
        R["baseline"]["rss_start"] = b.rss()
        st, bbody = get_once(b.addr, base_token, path)
        assert st == 200 and len(bbody) == len(body), (st, len(bbody), len(body))
        for t in cli:
            for url, tok in ((t["url"], t["token"]), (t.get("reg_url"), t.get("reg_token"))):
                if url:
                    st, ans = get_url(url, tok)
                    if st != 200:
                        raise RuntimeError(f"{t['name']}: GET {url} answered {st}: {ans[:300]!r}")

        # Every server under load: (result dict, key prefix, server, url, token).
        base_entry = {"name": "baseline", "d": R["baseline"], "pre": "", "server": b,
                      "url": b.url(path), "token": base_token}
        entries = [base_entry]
        for t in targets:
            d = R["by"][t["name"]]
            entries.append({"name": t["name"], "d": d, "pre": "", "server": servers[t["name"]],
                            "url": t["url"], "token": t["token"]})
            if t.get("reg_url"):
                entries.append({"name": f"{t['name']} (registered)", "d": d, "pre": "reg_",
                                "server": servers[t["name"]], "url": t["reg_url"], "token": t["reg_token"]})
        all_servers = [("baseline", b, R["baseline"])] + [(t["name"], servers[t["name"]], R["by"][t["name"]])
                                                          for t in targets]

        if want("idle"):
            log(f"idle: {args.idle} s, all servers at once")
            time.sleep(1.0)
            c0 = {n: s.task_switches() for n, s, _ in all_servers}
            time.sleep(args.idle)
            for n, s, d in all_servers:
                d["idle_cs"], d["idle_cs_detail"] = wakeups(c0[n], s.task_switches())
            log(f"idle wake-ups: { {n: (d['idle_cs'], d['idle_cs_detail']) for n, _, d in all_servers} }")

        if want("hot"):
            samples = {id(e): [] for e in entries}
            for rep in range(args.reps):
                # Every other round in reverse order, so no server always runs first (or
                # right after another's load) when the machine drifts.
                for e in (entries if rep % 2 == 0 else entries[::-1]):
                    r64 = wrk(e["url"], e["token"], 64, args.duration, server=e["server"])
                    r1 = wrk(e["url"], e["token"], 1, args.duration, server=e["server"])
                    samples[id(e)].append((r64, r1))
                    n2 = r64["non2xx"] + r1["non2xx"]
                    log(f"hot rep {rep + 1}/{args.reps} {e['name']}: {fmt(r64['rps'])} req/s @64, "
                        f"p99 {fmt(r64['p99_us'])} µs @64, {fmt(r1['rps'])} req/s @1, p99 {fmt(r1['p99_us'])} µs @1, "
                        f"CPU {fmt(r64['cpu_us'])} µs/req @64" + (f", non-2xx {n2}" if n2 else "")
                        + (f", socket errors {r64['socket_errors']}" if r64["socket_errors"] else ""))
            for e in entries:
                d, pre, s = e["d"], e["pre"], samples[id(e)]
                d[pre + "rps64"] = median([a["rps"] for a, _ in s])
                d[pre + "rps1"] = median([b_["rps"] for _, b_ in s])
                for c, idx in (("64", 0), ("1", 1)):
                    d[f"{pre}p50_{c}"] = median([x[idx]["p50_us"] for x in s])
                    d[f"{pre}p99_{c}"] = median([x[idx]["p99_us"] for x in s])
                    d[f"{pre}cpu{c}"] = median([x[idx]["cpu_us"] for x in s])
                # Each round's value over the baseline's in the same round: a disturbed
                # window moves one round's ratio, not the verdict.
                base_s = samples[id(base_entry)]
                if e is not base_entry:
                    for key, c, idx, field in PAIRED:
                        pairs = [(x[idx][field], y[idx][field]) for x, y in zip(s, base_s)]
                        d[f"{pre}round_ratios_{key}"] = [a / b_ if (a is not None and b_) else None
                                                         for a, b_ in pairs]
                d[pre + "requests_total"] = sum(a["requests"] + b_["requests"] for a, b_ in s)
                d[pre + "non2xx"] = sum(a["non2xx"] + b_["non2xx"] for a, b_ in s)
                d[pre + "raw_hot"] = s
            # Top up credport-like servers to the request count on the declared scope (the
            # baseline and generic peers are there for comparison), then RSS.
            for n, srv, d in all_servers:
                t = next((t for t in targets if t["name"] == n), None)
                total = lambda: d.get("requests_total", 0) + d.get("reg_requests_total", 0)
                while t and t["kind"] == "credport" and total() < args.requests:
                    left = args.requests - total()
                    secs = max(2, min(60, int(left / max(d["rps64"] or 1000, 1000)) + 1))
                    r = wrk(t["url"], t["token"], 64, secs)
                    d["requests_total"] += r["requests"]
                    d["non2xx"] += r["non2xx"]
                d["requests_total"] = total()
                time.sleep(1.0)
                d["rss_1m"] = srv.rss()
                d["rss_peak"] = srv.peak_rss()
                log(f"{n}: {d['requests_total']} requests, RSS {d['rss_1m'] / MIB:.1f} MiB, "
                    f"peak {d['rss_peak'] / MIB:.1f} MiB")

        if want("reload"):
            for t in cli:
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
            for t in cli:
                for variant, base_dir in (("disk", None), ("tmpfs", shm)):
                    if variant == "tmpfs" and not base_dir:
                        continue
                    h = Home(work, f"exec-{variant}-{t['name'].replace('/', '_')}", t["bin"])
                    if base_dir:
                        rd = tempfile.mkdtemp(prefix="credport-bench-run-", dir=base_dir)
                        h.extra["CREDPORT_RUNTIME_DIR"] = rd
                    h.write(".aws/credentials", credentials_text({PROFILE: session_keys("exec")}))
                    small_config(h, trust=t["trust"])
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
                h = peer_home(work, "startup", t)
                if t["kind"] == "generic":
                    r = startup_peer(t, h, work, args.startups)
                else:
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
            for t in cli:
                h, creds = scale_home(work, t["name"].replace("/", "_"), t["bin"], args.profiles, args.projects,
                                      trust=t["trust"], registered=t.get("reg_token") is not None)
                tok = h.token()
                reg_tok = h.token(REG_PROJECT, STAGE) if t.get("reg_token") else None
                s = Server([t["bin"], "serve", "--listen", "127.0.0.1:0"], h.env(), work, f"scale-{t['name']}")
                servers["scale"] = s
                d = R["by"][t["name"]]
                d["scale_listen_ms"] = (time.perf_counter() - s.t0) * 1e3
                st, _ = get_once(s.addr, tok, path)
                assert st == 200, st
                if reg_tok:
                    st, ans = get_once(s.addr, reg_tok, reg_path)
                    assert st == 200, (st, ans[:300])
                base_profiles = {k: v for k, v in creds.items() if k != PROFILE}
                r = reload_propagation(h, s.addr, tok, "atomic", args.scale_writes, base_profiles)
                d["scale_reload_p50"], d["scale_reload_p99"] = r["p50_ms"], r["p99_ms"]
                log(f"scale reload {t['name']}: {r}")
                # Side by side with a server of the small configuration, round by round,
                # every other round in reverse order: "the same cost" is judged on each
                # round's ratio, not on numbers taken minutes apart.
                hsm = peer_home(work, "scale-small", t)
                small_tok = hsm.token()
                small_reg_tok = None
                if reg_tok:
                    register_project(hsm)
                    small_reg_tok = hsm.token(REG_PROJECT, STAGE)
                small = Server([t["bin"], "serve", "--listen", "127.0.0.1:0"], hsm.env(), work,
                               f"scale-small-{t['name']}")
                servers["scale-small"] = small
                st, _ = get_once(small.addr, small_tok, path)
                assert st == 200, st
                scopes = [("", path, tok, small.url(path), small_tok)]
                if reg_tok:
                    st, ans = get_once(small.addr, small_reg_tok, reg_path)
                    assert st == 200, (st, ans[:300])
                    scopes.append(("reg_", reg_path, reg_tok, small.url(reg_path), small_reg_tok))
                runs = {pre: {"scale": [], "small": []} for pre, *_ in scopes}
                for rep in range(max(1, args.reps)):
                    for pre, p, tk, small_url, small_tok_ in scopes:
                        pair = [("scale", s.url(p), tk, s), ("small", small_url, small_tok_, small)]
                        for which, url, tk_, srv in (pair if rep % 2 == 0 else pair[::-1]):
                            a = wrk(url, tk_, 64, args.duration, server=srv)
                            b_ = wrk(url, tk_, 1, args.duration, server=srv)
                            runs[pre][which].append({"p99_64": a["p99_us"], "p99_1": b_["p99_us"], "rps64": a["rps"]})
                for pre, r in runs.items():
                    for key in ("p99_64", "p99_1", "rps64"):
                        d[f"scale_{pre}{key}"] = median([x[key] for x in r["scale"]])
                        d[f"scale_small_{pre}{key}"] = median([x[key] for x in r["small"]])
                        d[f"scale_{pre}round_ratios_{key}"] = [
                            x[key] / y[key] if (x[key] is not None and y[key]) else None
                            for x, y in zip(r["scale"], r["small"])]
                time.sleep(1.0)
                d["scale_rss"] = s.rss()
                log(f"scale {t['name']}: p99 {d['scale_p99_1']} µs @1, {d['scale_p99_64']} µs @64, "
                    f"{fmt(d['scale_rps64'])} req/s @64, registered {fmt(d.get('scale_reg_rps64'))} req/s @64, "
                    f"RSS {d['scale_rss'] / MIB:.1f} MiB")
                servers.pop("scale-small").stop()
                servers.pop("scale").stop()

        if want("cold"):
            moto, moto_port = start_moto(work)
            for t in cli:
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
    compare = render_compare(R, args, args.command) if want("hot") else None
    if compare:
        print()
        print(compare)
    if not args.no_doc:
        write_doc(table)
        log("docs/PERFORMANCE.md updated (results table)")
        if compare and len(targets) > 1:
            write_doc(compare, CMP_BEGIN, CMP_END)
            log("docs/PERFORMANCE.md updated (how credport compares)")


if __name__ == "__main__":
    main()
