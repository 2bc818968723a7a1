// Records the resolved versions of aws-config and aws-sdk-sts (from Cargo.lock) so that the
// `whoami` binary can report which SDK it was built with.
use std::{env, fs, path::Path};

fn locked_version(lock: &str, name: &str) -> String {
    let needle = format!("name = \"{name}\"\nversion = \"");
    lock.find(&needle)
        .map(|i| {
            let rest = &lock[i + needle.len()..];
            rest[..rest.find('"').unwrap_or(0)].to_string()
        })
        .unwrap_or_else(|| "unknown".to_string())
}

fn main() {
    let dir = env::var("CARGO_MANIFEST_DIR").unwrap();
    let lock_path = Path::new(&dir).join("Cargo.lock");
    println!("cargo:rerun-if-changed={}", lock_path.display());
    let lock = fs::read_to_string(&lock_path).unwrap_or_default();
    println!("cargo:rustc-env=AWS_CONFIG_VERSION={}", locked_version(&lock, "aws-config"));
    println!("cargo:rustc-env=AWS_SDK_STS_VERSION={}", locked_version(&lock, "aws-sdk-sts"));
}
