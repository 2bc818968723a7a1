//! `whoami`: resolves credentials through aws-config's default chain (no explicit credentials)
//! and calls STS GetCallerIdentity, printing one JSON line per call.
//!
//! Usage: whoami [--mode sts|creds-only] [--loop N] [--interval SECONDS] [--keep-going]
//!
//! STS endpoint: aws-config honours `AWS_ENDPOINT_URL_STS` / `AWS_ENDPOINT_URL` natively.
//! On error prints `{"error": "..."}` and exits 2 (with `--keep-going`, a loop goes on after
//! an error and exits 2 at the end).
use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_config::BehaviorVersion;
use aws_credential_types::provider::ProvideCredentials;
use aws_sdk_sts::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_sts::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_sts::error::{BoxError, DisplayErrorContext};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};

const CLIENT: &str = "rust";

struct Args {
    mode: String,
    count: u64,
    interval: f64,
    looping: bool,
    keep_going: bool,
}

fn usage(msg: &str) -> ! {
    emit(&json!({ "error": format!("usage: {msg}; whoami [--mode sts|creds-only] [--loop N] [--interval S] [--keep-going]") }));
    std::process::exit(2);
}

fn parse_args() -> Args {
    let mut a = Args { mode: "sts".into(), count: 1, interval: 1.0, looping: false, keep_going: false };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut val = |name: &str| it.next().unwrap_or_else(|| usage(&format!("{name} needs a value")));
        match arg.as_str() {
            "--mode" => a.mode = val("--mode"),
            "--loop" => {
                a.count = val("--loop").parse().unwrap_or_else(|_| usage("--loop takes an integer"));
                a.looping = true;
            }
            "--interval" => a.interval = val("--interval").parse().unwrap_or_else(|_| usage("--interval takes seconds")),
            "--keep-going" => a.keep_going = true,
            other => usage(&format!("unknown argument {other}")),
        }
    }
    if a.mode != "sts" && a.mode != "creds-only" {
        usage("--mode must be sts or creds-only");
    }
    a
}

/// RFC 3339 UTC with milliseconds, e.g. 2026-11-27T12:00:00.123Z (or without millis).
fn rfc3339(t: SystemTime, millis: bool) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, sod) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let base = format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}", sod / 3600, sod % 3600 / 60, sod % 60);
    if millis { format!("{base}.{:03}Z", d.subsec_millis()) } else { format!("{base}Z") }
}

/// Remembers the access key id that signed the last request (from the SigV4 Authorization
/// header), so that printing it costs no extra credential fetch.
#[derive(Debug, Clone, Default)]
struct SigningKey(Arc<Mutex<Option<String>>>);

impl Intercept for SigningKey {
    fn name(&self) -> &'static str {
        "SigningKey"
    }
    fn read_before_transmit(
        &self,
        ctx: &BeforeTransmitInterceptorContextRef<'_>,
        _rc: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let key = ctx
            .request()
            .headers()
            .get("authorization")
            .and_then(|h| h.split("Credential=").nth(1))
            .and_then(|rest| rest.split('/').next())
            .map(str::to_string);
        *self.0.lock().unwrap() = key;
        Ok(())
    }
}

fn emit(v: &Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{v}");
    let _ = out.flush();
}

fn suffix(key: &str) -> String {
    key.chars().rev().take(4).collect::<Vec<_>>().into_iter().rev().collect()
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args = parse_args();
    let version = env!("AWS_SDK_STS_VERSION");
    let config = aws_config::defaults(BehaviorVersion::latest()).load().await;
    let signing_key = SigningKey::default();
    let sts_conf = aws_sdk_sts::config::Builder::from(&config).interceptor(signing_key.clone()).build();
    let sts = aws_sdk_sts::Client::from_conf(sts_conf);
    let creds = config.credentials_provider();
    let mut failed = false;

    for i in 0..args.count {
        if i > 0 {
            tokio::time::sleep(Duration::from_secs_f64(args.interval)).await;
        }
        let mut line = json!({ "client": CLIENT, "version": version, "aws_config": env!("AWS_CONFIG_VERSION") });
        let result: Result<(), String> = if args.mode == "creds-only" {
            // Calls the default chain's provider directly: this bypasses the client's identity
            // cache, so every call is one fetch from the container endpoint.
            match &creds {
                None => Err("no credentials provider configured".into()),
                Some(p) => match p.provide_credentials().await {
                    Ok(c) => {
                        line["access_key_id_suffix"] = json!(suffix(c.access_key_id()));
                        line["expiry"] = json!(c.expiry().map(|e| rfc3339(e, false)));
                        Ok(())
                    }
                    Err(e) => Err(DisplayErrorContext(&e).to_string()),
                },
            }
        } else {
            match sts.get_caller_identity().send().await {
                Ok(out) => {
                    line["account"] = json!(out.account());
                    line["arn"] = json!(out.arn());
                    // The key the request was signed with (the client's cached identity).
                    let key = signing_key.0.lock().unwrap().clone().unwrap_or_default();
                    line["access_key_id_suffix"] = json!(suffix(&key));
                    Ok(())
                }
                Err(e) => Err(DisplayErrorContext(&e).to_string()),
            }
        };
        match result {
            Ok(()) => {
                if args.looping {
                    line["ts"] = json!(rfc3339(SystemTime::now(), true));
                    line["i"] = json!(i);
                }
                emit(&line);
            }
            Err(msg) => {
                let mut err = json!({ "error": msg, "client": CLIENT });
                if args.looping {
                    err["ts"] = json!(rfc3339(SystemTime::now(), true));
                    err["i"] = json!(i);
                }
                emit(&err);
                failed = true;
                if !args.keep_going {
                    std::process::exit(2);
                }
            }
        }
    }
    if failed {
        std::process::exit(2);
    }
}
