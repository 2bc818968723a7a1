//! A real Docker engine for the container tests, started by the tests themselves.
//!
//! The engine is credport's own `dockerd`: one per machine, its socket, pid file and leases
//! under `/run/credport-test-docker`, its data root and log under `.cache/docker/engine` of
//! the checkout that started it. It is started when it does not answer and stopped by the
//! last test process that leased it, if a test process started it. It uses only link-local addresses
//! (`--bip 169.254.200.1/24`, pools from `169.254.0.0/16`), no iptables NAT, so no container
//! can reach anything but the host and its own networks.
//!
//! No image is pulled: `scripts/test-deps` debootstraps a Debian bookworm minbase (python3,
//! ca-certificates) into `.cache/docker/bookworm-minbase.tar` and installs boto3 with
//! `pip install --target` into `.cache/docker/pylib`; the base is `docker import`ed and the
//! test images are built on it, each tagged by the hash of what went into it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::repo_root;

/// The address of the shared credentials network's relay, and its subnet.
pub const RELAY_IP: &str = "169.254.170.2";
/// The credentials network (as README's walkthrough creates it).
pub const CREDPORT_SUBNET: &str = "169.254.170.0/24";
/// The gateway of the engine's default bridge: what `host-gateway` resolves to.
pub const BRIDGE_GATEWAY: &str = "169.254.200.1";

/// `.cache/docker`, canonical (runc refuses a rootfs path through a symlink).
pub fn cache_dir() -> PathBuf {
    let d = repo_root().join(".cache/docker");
    std::fs::create_dir_all(&d).expect("create .cache/docker");
    d.canonicalize().expect("canonicalize .cache/docker")
}

/// The engine's machine-wide state: socket, pid file, leases, locks.
fn engine_dir() -> PathBuf {
    let d = PathBuf::from("/run/credport-test-docker");
    std::fs::create_dir_all(d.join("leases"))
        .unwrap_or_else(|e| panic!("create {} (tests/docker.rs needs root): {e}", d.display()));
    d
}

/// Where the engine's images and log live: `.cache/docker/engine`.
fn data_dir() -> PathBuf {
    let d = cache_dir().join("engine");
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The last lines of the engine's log, for failure messages.
pub fn engine_log_tail() -> String {
    let log = std::fs::read_to_string(data_dir().join("dockerd.log")).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// An exclusive lock on a file (held until dropped).
pub struct FileLock(std::fs::File);

impl FileLock {
    /// Blocks until `path` is locked.
    pub fn acquire(path: &Path) -> FileLock {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .unwrap_or_else(|e| panic!("open lock {}: {e}", path.display()));
        use std::os::fd::AsRawFd;
        let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) };
        assert_eq!(rc, 0, "flock {}", path.display());
        FileLock(f)
    }
}

/// The lock every test that puts `169.254.170.2` on the host or in the engine holds
/// (tests/containers.rs does too), so their routes never overlap.
pub fn credentials_network_lock() -> FileLock {
    FileLock::acquire(&std::env::temp_dir().join("credport-169.254.170.lock"))
}

/// A lease on the engine; the last lease of a test process that started it stops it.
pub struct Engine {
    /// `unix://...` for `DOCKER_HOST`.
    pub host: String,
    lease: PathBuf,
}

/// Whether `pid` runs (a zombie does not; one that is our own child is reaped).
fn pid_alive(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    unsafe { libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG) };
    if unsafe { libc::kill(pid, 0) } != 0 {
        return false;
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat
        .rfind(')')
        .and_then(|i| stat[i + 1..].split_whitespace().next());
    !matches!(state, Some("Z") | Some("X") | None)
}

impl Engine {
    /// Leases the engine, starting `dockerd` when it does not answer.
    pub fn lease() -> Engine {
        let dir = engine_dir();
        let sock = dir.join("docker.sock");
        let host = format!("unix://{}", sock.display());
        let _lock = FileLock::acquire(&dir.join("lock"));
        let lease = dir.join("leases").join(std::process::id().to_string());
        std::fs::write(&lease, b"").unwrap();
        let engine = Engine { host, lease };
        if !engine.answers() {
            engine.start(&dir);
        }
        engine
    }

    fn answers(&self) -> bool {
        Command::new("docker")
            .env("DOCKER_HOST", &self.host)
            .args(["version", "--format", "{{.Server.Version}}"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    fn start(&self, dir: &Path) {
        let bin = which("dockerd").unwrap_or_else(|| {
            panic!(
                "dockerd not found: run `bash scripts/test-deps` (it installs Debian's docker.io)"
            )
        });
        let log = std::fs::File::create(data_dir().join("dockerd.log")).unwrap();
        let mut cmd = Command::new(bin);
        cmd.arg("--data-root")
            .arg(data_dir().join("data"))
            .arg("--exec-root")
            .arg(dir.join("exec"))
            .arg("--pidfile")
            .arg(dir.join("dockerd.pid"))
            .args(["-H", &self.host])
            .args(["--bip", "169.254.200.1/24"])
            .args(["--default-address-pool", "base=169.254.0.0/16,size=24"])
            .args([
                "--iptables=false",
                "--ip-masq=false",
                "--userland-proxy=false",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        // Its own session, so a Ctrl-C of the test run does not kill it half-way.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(|| {
                libc::setsid();
                Ok(())
            });
        }
        let shown = format!("{cmd:?}");
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("{shown}: {e}"));
        std::fs::write(dir.join("started-by-tests"), child.id().to_string()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.answers() {
            if let Ok(Some(s)) = child.try_wait() {
                panic!(
                    "dockerd exited ({s}) while starting: {shown}\n{}",
                    engine_log_tail()
                );
            }
            assert!(
                Instant::now() < deadline,
                "dockerd did not answer within 60 s: {shown}\n{}",
                engine_log_tail()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        // Reaped by init once we exit; the pid file is how it is stopped.
        std::mem::forget(child);
    }

    /// A `docker` command against this engine.
    pub fn docker(&self) -> Command {
        let mut c = Command::new("docker");
        c.env("DOCKER_HOST", &self.host);
        c
    }

    /// Runs `docker ARGS`, asserting success; returns stdout.
    pub fn run(&self, args: &[&str]) -> String {
        let out = self.docker().args(args).output().expect("run docker");
        assert!(
            out.status.success(),
            "docker {} failed ({}):\n{}\n{}\n--- dockerd log (tail):\n{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            engine_log_tail()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `docker ARGS` and returns its output whatever the status.
    pub fn output(&self, args: &[&str]) -> Output {
        self.docker().args(args).output().expect("run docker")
    }

    fn image_exists(&self, tag: &str) -> bool {
        self.output(&["image", "inspect", "--format", "{{.Id}}", tag])
            .status
            .success()
    }

    /// The Debian bookworm base, imported from the debootstrapped tarball.
    pub fn base_image(&self) -> String {
        let tar = cache_dir().join("bookworm-minbase.tar");
        assert!(
            tar.exists(),
            "{} is missing: run `bash scripts/test-deps` (its docker step debootstraps it)",
            tar.display()
        );
        let stamp = std::fs::read_to_string(cache_dir().join("bookworm-minbase.stamp"))
            .unwrap_or_else(|_| "0".into());
        let tag = format!("credport-test/base:{}", short_hash(stamp.as_bytes()));
        let _lock = FileLock::acquire(&engine_dir().join("images.lock"));
        if !self.image_exists(&tag) {
            self.run(&["import", tar.to_str().unwrap(), &tag]);
        }
        tag
    }

    /// Builds (once per content) an image from a Dockerfile and files placed in a fresh
    /// context directory: `files` are (name in context, source path).
    pub fn build(&self, name: &str, dockerfile: &str, files: &[(&str, &Path)]) -> String {
        let mut h = sha2_hex(dockerfile.as_bytes());
        for (n, p) in files {
            h.push_str(n);
            h.push_str(&tree_fingerprint(p));
        }
        let tag = format!("credport-test/{name}:{}", short_hash(h.as_bytes()));
        let _lock = FileLock::acquire(&engine_dir().join("images.lock"));
        if self.image_exists(&tag) {
            return tag;
        }
        let ctx = tempfile::tempdir().unwrap();
        std::fs::write(ctx.path().join("Dockerfile"), dockerfile).unwrap();
        for (n, p) in files {
            let st = Command::new("cp")
                .arg("-a")
                .arg(p)
                .arg(ctx.path().join(n))
                .status()
                .unwrap();
            assert!(st.success(), "cp {} into the build context", p.display());
        }
        self.run(&["build", "-q", "-t", &tag, ctx.path().to_str().unwrap()]);
        tag
    }

    /// Python 3 and boto3 (from `.cache/docker/pylib`) on the base.
    pub fn python_image(&self) -> String {
        let base = self.base_image();
        let pylib = cache_dir().join("pylib");
        assert!(
            pylib.join("boto3").exists(),
            "{} is missing: run `bash scripts/test-deps`",
            pylib.display()
        );
        self.build(
            "python",
            &format!(
                "FROM {base}\nCOPY pylib /opt/pylib\nENV PYTHONPATH=/opt/pylib PYTHONDONTWRITEBYTECODE=1\nCMD [\"python3\"]\n"
            ),
            &[("pylib", &pylib)],
        )
    }

    /// credport's image: the committed Dockerfile's runtime stage on the base, with the
    /// binary under test instead of the one its build stage compiles.
    pub fn credport_image(&self) -> String {
        let base = self.base_image();
        let dockerfile = runtime_stage(&base);
        self.build(
            "credport",
            &dockerfile,
            &[("credport", Path::new(super::BIN))],
        )
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        let dir = engine_dir();
        let _lock = FileLock::acquire(&dir.join("lock"));
        let _ = std::fs::remove_file(&self.lease);
        let others = std::fs::read_dir(dir.join("leases"))
            .map(|rd| {
                rd.flatten()
                    .filter(|e| {
                        let pid: i32 = e.file_name().to_string_lossy().parse().unwrap_or(0);
                        if pid_alive(pid) {
                            true
                        } else {
                            let _ = std::fs::remove_file(e.path());
                            false
                        }
                    })
                    .count()
            })
            .unwrap_or(0);
        let marker = dir.join("started-by-tests");
        if others > 0 || !marker.exists() {
            return;
        }
        let pid: i32 = std::fs::read_to_string(dir.join("dockerd.pid"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        let _ = std::fs::remove_file(&marker);
        if pid_alive(pid) {
            unsafe { libc::kill(pid, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(30);
            while pid_alive(pid) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// The committed Dockerfile's last stage (from its last `FROM`), with `FROM` replaced by
/// `base` and the binary copied from the build context instead of the build stage.
pub fn runtime_stage(base: &str) -> String {
    let text = std::fs::read_to_string(repo_root().join("Dockerfile")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let start = lines
        .iter()
        .rposition(|l| l.starts_with("FROM "))
        .expect("Dockerfile has a FROM");
    let mut out = format!("FROM {base}\n");
    for l in &lines[start + 1..] {
        if let Some(rest) = l.strip_prefix("COPY --from=build ") {
            let dest = rest.split_whitespace().last().unwrap();
            out.push_str(&format!("COPY credport {dest}\n"));
        } else {
            out.push_str(l);
            out.push('\n');
        }
    }
    out
}

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    std::env::split_paths(&format!("{path}:/usr/sbin:/sbin"))
        .map(|d| d.join(name))
        .find(|p| p.exists())
}

fn sha2_hex(bytes: &[u8]) -> String {
    use std::process::Stdio;
    let mut c = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("sha256sum");
    c.stdin.take().unwrap().write_all(bytes).unwrap();
    let out = c.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_string()
}

fn short_hash(bytes: &[u8]) -> String {
    sha2_hex(bytes)[..16].to_string()
}

/// A fingerprint of a file (its content hash) or a directory (names, sizes, mtimes).
fn tree_fingerprint(p: &Path) -> String {
    if p.is_file() {
        let out = Command::new("sha256sum").arg(p).output().unwrap();
        return String::from_utf8_lossy(&out.stdout).into_owned();
    }
    let out = Command::new("find")
        .arg(p)
        .args(["-printf", "%P %s %T@\n"])
        .output()
        .unwrap();
    let mut lines: Vec<_> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(String::from)
        .collect();
    lines.sort();
    short_hash(lines.join("\n").as_bytes())
}
