//! The modes of the matrix, run for one client. Independent modes run concurrently, each
//! with its own HOME and daemon (they rotate keys, rewrite files and set lifetimes), all
//! against one moto.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::harness::{
    Client, Creds, DEFAULT_ACCOUNT, DEV, MOVED, MotoLease, Outcome, PROD, Running, World,
    replace_by_rename, run_once, short,
};
use crate::report::{self, Row, Verdict};

/// One-shot calls may take long (serverless ~7 s, CLI v2 ~4 s, more under load).
const ONE_SHOT: Duration = Duration::from_secs(120);
/// Served lifetime for the rotation, refresh and failure modes (the minimum credport allows).
const SHORT_LIFETIME: u64 = 5;
/// Served lifetime for the account switch: long enough to tell the SDKs' windows apart.
const SWITCH_LIFETIME: u64 = 20;

struct Ctx<'a> {
    client: &'a Client,
    sts: String,
    version: Mutex<Option<String>>,
}

impl Ctx<'_> {
    fn saw(&self, v: &serde_json::Value) {
        if v.get("account").is_some() {
            let mut g = self.version.lock().unwrap();
            if g.is_none() {
                *g = Some((self.client.version_of)(v));
            }
        }
    }

    /// Pass when the run succeeded with `account`.
    fn expect(&self, mode: &'static str, out: &Outcome, account: &str, note: &str) -> Row {
        let secs = out.took.as_secs_f64();
        let ok = out.status.is_some_and(|s| s.success()) && out.account() == Some(account);
        if ok {
            self.saw(out.last().unwrap());
            Row::pass(mode, secs, note)
        } else {
            let hint = if out.account() == Some(DEFAULT_ACCOUNT) {
                " (that is the [default] profile: the endpoint was shadowed)"
            } else {
                ""
            };
            Row::fail(
                mode,
                Some(secs),
                format!("expected account {account}{hint}: {}", out.describe()),
            )
        }
    }

    /// A mode the client is documented not to support: run anyway; failing as documented
    /// is "unsupported" (with what was observed), working is a pass worth noticing.
    fn probe(&self, mode: &'static str, out: &Outcome, account: &str, reason: &str) -> Row {
        let secs = out.took.as_secs_f64();
        if out.status.is_some_and(|s| s.success()) && out.account() == Some(account) {
            self.saw(out.last().unwrap());
            Row::pass(
                mode,
                secs,
                format!("documented as unsupported ({reason}), but it worked"),
            )
        } else {
            Row::unsupported(
                mode,
                Some(secs),
                format!("{reason}; observed: {}", out.describe()),
            )
        }
    }
}

/// Runs `f` as mode `mode`; a panic becomes a failed row.
fn guard(mode: &'static str, f: impl FnOnce() -> Row) -> Row {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            Row::fail(mode, None, format!("panicked: {}", short(&msg, 400)))
        }
    }
}

/// Runs every mode for `client`, writes `target/compat/<id>.json`, and fails when a mode
/// failed. Three daemons per client run concurrently: one for the one-shot modes, then
/// (with a short lifetime) the token-file rotation and the failure path; one for the
/// refresh; one for the account switch.
pub fn run_client(client: Client) {
    let started = Instant::now();
    let moto = MotoLease::acquire();
    let ctx = Ctx {
        client: &client,
        sts: moto.url.clone(),
        version: Mutex::new(None),
    };
    let rows: Vec<Row> = std::thread::scope(|s| {
        let a = s.spawn(|| {
            let w = match std::panic::catch_unwind(|| World::new(&ctx.sts, None)) {
                Ok(w) => w,
                Err(_) => {
                    return vec![Row::fail(
                        "full-uri+token",
                        None,
                        "the daemon did not start (see the output above)",
                    )];
                }
            };
            let mut rows = one_shot_modes(&ctx, &w);
            if ctx.client.long_running {
                rows.push(guard("token-file-rotation", || {
                    w.set_lifetime(Some(SHORT_LIFETIME));
                    rotation(&ctx, &w)
                }));
            } else {
                rows.push(Row::unsupported(
                    "token-file-rotation",
                    None,
                    ONE_SHOT_REASON,
                ));
            }
            rows.push(guard("rotated-token-failure", || failure(&ctx, &w)));
            rows
        });
        let f = s.spawn(|| guard("refresh", || refresh(&ctx)));
        let g = s.spawn(|| guard("account-switch", || switch(&ctx)));
        let mut rows = a.join().unwrap();
        rows.push(f.join().unwrap());
        rows.push(g.join().unwrap());
        rows
    });
    drop(moto);
    let version = ctx
        .version
        .lock()
        .unwrap()
        .clone()
        .unwrap_or_else(|| "unknown (no successful call)".into());
    let version = if client.version_prefix.is_empty() {
        version
    } else {
        format!("{} ({version})", client.version_prefix)
    };
    let wall = started.elapsed().as_secs_f64();
    let file = report::write(client.id, client.name, &version, wall, &rows);
    let mut summary = String::new();
    for r in &rows {
        summary.push_str(&format!(
            "{:<24} {:<11} {:>6} {}\n",
            r.mode,
            r.verdict.as_str(),
            r.seconds.map(|s| format!("{s:.1}")).unwrap_or_default(),
            r.note
        ));
    }
    eprintln!(
        "== {} {version}: {:.1} s, {}\n{summary}",
        client.name,
        wall,
        file.display()
    );
    let failed: Vec<_> = rows.iter().filter(|r| r.verdict == Verdict::Fail).collect();
    assert!(
        failed.is_empty(),
        "{}: {} mode(s) failed (see {}):\n{}",
        client.name,
        failed.len(),
        file.display(),
        failed
            .iter()
            .map(|r| format!("  {}: {}", r.mode, r.note))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

fn write_token(w: &World, stage: &str) -> std::path::PathBuf {
    let path = w.home.path().join(format!("{stage}.token"));
    replace_by_rename(&path, &w.token(stage));
    path
}

/// (a)-(d): one call each, on one daemon with the default served lifetime.
fn one_shot_modes(ctx: &Ctx, w: &World) -> Vec<Row> {
    let c = ctx.client;
    let mut rows = Vec::new();

    rows.push(guard("full-uri+token", || {
        let tok = w.token("dev");
        let out = run_once(c.direct(w, "dev", Creds::Token(&tok), None), ONE_SHOT);
        ctx.expect("full-uri+token", &out, DEV, "")
    }));

    rows.push(guard("full-uri+token-file", || {
        let file = write_token(w, "dev");
        let out = run_once(c.direct(w, "dev", Creds::TokenFile(&file), None), ONE_SHOT);
        match c.no_token_file {
            None => ctx.expect("full-uri+token-file", &out, DEV, ""),
            Some(reason) => ctx.probe("full-uri+token-file", &out, DEV, reason),
        }
    }));

    let hostile = "stage prod; shell has AWS_PROFILE=default and [default] keys";
    rows.push(guard("exec", || {
        let out = run_once(c.exec(w, "prod", false), ONE_SHOT);
        match c.no_token_file {
            None => ctx.expect("exec", &out, PROD, hostile),
            Some(reason) => ctx.probe(
                "exec",
                &out,
                PROD,
                &format!(
                    "exec passes a token file by default and {reason}; use `credport exec --env-token`"
                ),
            ),
        }
    }));
    if c.no_token_file.is_some() {
        rows.push(guard("exec --env-token", || {
            let out = run_once(c.exec(w, "prod", true), ONE_SHOT);
            ctx.expect("exec --env-token", &out, PROD, hostile)
        }));
    }

    let hostile_env = "eval in bash; stage prod; shell has AWS_PROFILE=default, [default] keys and AWS_ACCESS_KEY_ID";
    rows.push(guard("env", || {
        let out = run_once(c.env(w, "prod", false), ONE_SHOT);
        match c.no_token_file {
            None => ctx.expect("env", &out, PROD, hostile_env),
            Some(reason) => ctx.probe(
                "env",
                &out,
                PROD,
                &format!(
                    "env prints a token file by default and {reason}; use `credport env --env-token`"
                ),
            ),
        }
    }));
    if c.no_token_file.is_some() {
        rows.push(guard("env --env-token", || {
            let out = run_once(c.env(w, "prod", true), ONE_SHOT);
            ctx.expect("env --env-token", &out, PROD, hostile_env)
        }));
    }
    rows
}

const ONE_SHOT_REASON: &str = "one-shot process: every call is a new process that fetches once, so there is no cache to refresh or file to re-read (covered by the one-shot modes)";

/// Reads `n` result lines that must all be `account`.
fn expect_lines(ctx: &Ctx, r: &mut Running, n: usize, account: &str) -> Result<(), String> {
    for _ in 0..n {
        match r.next(Duration::from_secs(60)) {
            Some((_, v)) if v["account"] == account => ctx.saw(&v),
            Some((_, v)) => {
                return Err(format!(
                    "expected account {account}: {}",
                    short(&v.to_string(), 240)
                ));
            }
            None => return Err("no output within 60 s".into()),
        }
    }
    Ok(())
}

fn loop_failed(mode: &'static str, r: Running, why: String) -> Row {
    let out = r.kill();
    Row::fail(
        mode,
        None,
        format!("{why}; stderr: {}", short(out.stderr.trim(), 300)),
    )
}

/// (e) The token file is replaced by rename (after `credport token --rotate`) while the
/// client runs; every call must keep succeeding.
fn rotation(ctx: &Ctx, w: &World) -> Row {
    const MODE: &str = "token-file-rotation";
    let c = ctx.client;
    if !c.long_running {
        return Row::unsupported(MODE, None, ONE_SHOT_REASON);
    }
    if let Some(reason) = c.no_token_file {
        return Row::unsupported(MODE, None, reason);
    }
    let file = write_token(w, "dev");
    let calls = 14;
    let started = Instant::now();
    let mut r =
        Running::spawn(&mut c.direct(w, "dev", Creds::TokenFile(&file), Some((calls, 1.0))));
    if let Err(e) = expect_lines(ctx, &mut r, 4, DEV) {
        return loop_failed(MODE, r, e);
    }
    let before = w.requests("dev", "ok");
    let refused_before = w.requests("", "InvalidToken");
    let gap = w.rotate_and_replace(&file, "dev");
    let out = r.finish(started, Duration::from_secs(120));
    let after = w.requests("dev", "ok") - before;
    let refused = w.requests("", "InvalidToken") - refused_before;
    let errors: Vec<_> = out
        .lines
        .iter()
        .filter(|v| v.get("error").is_some())
        .collect();
    let wrong = out.lines.iter().filter(|v| v["account"] != DEV).count();
    let secs = out.took.as_secs_f64();
    if out.status.is_some_and(|s| s.success())
        && errors.is_empty()
        && wrong == 0
        && out.lines.len() == calls as usize
        && after >= 1
    {
        Row::pass(
            MODE,
            secs,
            format!(
                "{calls} calls, all {DEV}; {after} fetch(es) with the new token after the rename; {refused} request(s) refused in the <= {:.0} ms from `credport token --rotate` to the rename (served lifetime {SHORT_LIFETIME} s)",
                gap.as_secs_f64() * 1000.0
            ),
        )
    } else if let Some(reason) = c.token_file_read_once {
        Row::unsupported(
            MODE,
            Some(secs),
            format!(
                "{reason}; observed: {refused} request(s) refused, {}",
                out.describe()
            ),
        )
    } else {
        Row::fail(
            MODE,
            Some(secs),
            format!(
                "{} lines, {} errors, {wrong} other account, {after} fetches after rotation, {refused} refused with the old token in the <= {:.0} ms from `credport token --rotate` to the rename, exit {:?}: {}",
                out.lines.len(),
                errors.len(),
                gap.as_secs_f64() * 1000.0,
                out.status,
                out.describe()
            ),
        )
    }
}

/// (f) A short served lifetime: a long-running client keeps calling across refreshes.
fn refresh(ctx: &Ctx) -> Row {
    const MODE: &str = "refresh";
    let c = ctx.client;
    if !c.long_running {
        return Row::unsupported(MODE, None, ONE_SHOT_REASON);
    }
    let w = World::new(&ctx.sts, Some(SHORT_LIFETIME));
    let tok = w.token("dev");
    let calls = 20;
    let out = run_once(
        c.direct(&w, "dev", Creds::Token(&tok), Some((calls, 1.0))),
        Duration::from_secs(150),
    );
    let fetches = w.requests("dev", "ok");
    let secs = out.took.as_secs_f64();
    let good = out.lines.iter().filter(|v| v["account"] == DEV).count();
    // 20 calls 1 s apart span >= 19 s: at least 3 refreshes of a 5 s lifetime.
    if out.status.is_some_and(|s| s.success()) && good == calls as usize && fetches >= 4 {
        ctx.saw(out.last().unwrap());
        Row::pass(
            MODE,
            secs,
            format!(
                "{calls} calls 1 s apart, all {DEV}; {fetches} fetches at the daemon (served lifetime {SHORT_LIFETIME} s): {}",
                c.refresh
            ),
        )
    } else {
        Row::fail(
            MODE,
            Some(secs),
            format!(
                "{good}/{calls} calls ok, {fetches} fetches: {}",
                out.describe()
            ),
        )
    }
}

/// (g) ~/.aws/config is rewritten so that the dev stage's role is in another account; the
/// running client must switch without a restart. Measures seconds from the rewrite to
/// the first call that reports the new account.
fn switch(ctx: &Ctx) -> Row {
    const MODE: &str = "account-switch";
    let c = ctx.client;
    if !c.long_running {
        return Row::unsupported(MODE, None, ONE_SHOT_REASON);
    }
    let w = World::new(&ctx.sts, Some(SWITCH_LIFETIME));
    let tok = w.token("dev");
    let mut r = Running::spawn(&mut c.direct(&w, "dev", Creds::Token(&tok), Some((90, 1.0))));
    if let Err(e) = expect_lines(ctx, &mut r, 3, DEV) {
        return loop_failed(MODE, r, e);
    }
    w.move_dev_to(MOVED);
    let t0 = Instant::now();
    let mut old_calls = 0;
    let took = loop {
        match r.next(Duration::from_secs(60)) {
            Some((t, v)) if v["account"] == MOVED => break t.duration_since(t0),
            Some((_, v)) if v["account"] == DEV => old_calls += 1,
            Some((_, v)) => {
                return loop_failed(
                    MODE,
                    r,
                    format!("after the rewrite: {}", short(&v.to_string(), 240)),
                );
            }
            None => return loop_failed(MODE, r, "no output within 60 s".into()),
        }
        if t0.elapsed() > Duration::from_secs(SWITCH_LIFETIME + 40) {
            return loop_failed(
                MODE,
                r,
                format!(
                    "still {DEV} {:.0} s after the rewrite",
                    t0.elapsed().as_secs_f64()
                ),
            );
        }
    };
    if let Err(e) = expect_lines(ctx, &mut r, 2, MOVED) {
        return loop_failed(MODE, r, format!("after switching: {e}"));
    }
    r.kill();
    Row::pass(
        MODE,
        took.as_secs_f64(),
        format!(
            "{old_calls} call(s) on {DEV} after the rewrite, then {MOVED} (served lifetime {SWITCH_LIFETIME} s): {}",
            c.switch
        ),
    )
}

/// (h) The token key is rotated under a client holding the old token (in
/// AWS_CONTAINER_AUTHORIZATION_TOKEN): it must report an error and exit, not hang.
/// Seconds: from the rotation to the exit.
fn failure(ctx: &Ctx, w: &World) -> Row {
    const MODE: &str = "rotated-token-failure";
    let c = ctx.client;
    let limit = Duration::from_secs(60);
    let refused_before = w.requests("", "InvalidToken");
    if !c.long_running {
        let old = w.token("dev");
        w.rotate();
        let out = run_once(c.direct(w, "dev", Creds::Token(&old), None), ONE_SHOT);
        return failed_clearly(
            MODE,
            w,
            refused_before,
            &out,
            out.took,
            "one call with the old token",
        );
    }
    let old = w.token("dev");
    let started = Instant::now();
    let mut r = Running::spawn(&mut c.direct(w, "dev", Creds::Token(&old), Some((200, 1.0))));
    if let Err(e) = expect_lines(ctx, &mut r, 2, DEV) {
        return loop_failed(MODE, r, e);
    }
    w.rotate();
    let t0 = Instant::now();
    let out = r.finish(started, t0.duration_since(started) + limit);
    let took = t0.elapsed().min(out.took);
    failed_clearly(
        MODE,
        w,
        refused_before,
        &out,
        took,
        &format!("long-running client, served lifetime {SHORT_LIFETIME} s"),
    )
}

fn failed_clearly(
    mode: &'static str,
    w: &World,
    refused_before: u64,
    out: &Outcome,
    took: Duration,
    what: &str,
) -> Row {
    let refused = w.requests("", "InvalidToken") - refused_before;
    let secs = took.as_secs_f64();
    let Some(status) = out.status else {
        return Row::fail(
            mode,
            Some(secs),
            format!(
                "{what}: still running {secs:.0} s after the rotation (a hang); {refused} request(s) refused"
            ),
        );
    };
    if status.success() {
        return Row::fail(
            mode,
            Some(secs),
            format!("{what}: exited 0: {}", out.describe()),
        );
    }
    let message = out.error().unwrap_or_else(|| {
        // serverless reports the handler's exception on stderr/stdout, not as a JSON line.
        let text = format!("{}\n{}", out.stdout, out.stderr);
        text.lines()
            .filter(|l| {
                let l = l.to_ascii_lowercase();
                l.contains("error") || l.contains("token") || l.contains("credential")
            })
            .take(2)
            .collect::<Vec<_>>()
            .join(" / ")
    });
    Row::pass(
        mode,
        secs,
        format!(
            "{what}: exit {}, {refused} request(s) refused with 401; error: {}",
            status
                .code()
                .map(|c| c.to_string())
                .unwrap_or("signal".into()),
            short(&message, 200)
        ),
    )
}
