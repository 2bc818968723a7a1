//! The SDK compatibility matrix: every real client (boto3 latest and botocore 1.32, AWS CLI
//! v1 and v2, the JS SDK v3 and v2, the Rust SDK, serverless@3 `invoke local` with Node and
//! Python handlers) against a real `credport serve` and moto's STS, in every mode it
//! supports (see docs/COMPATIBILITY.md).
//!
//! One test per client, so the test runner runs clients in parallel; inside a test the
//! long-running modes run concurrently, each with its own HOME and daemon. Each test writes
//! `target/compat/<client>.json`; the `compat-table` example (`tests/compat/table.rs`, with
//! the clients, modes and table format of `report.rs`) merges them into the table in
//! README.md and docs/COMPATIBILITY.md. A client that is not installed fails loudly.
//!
//! ```sh
//! bash scripts/test-deps
//! cargo test --test compat -- --test-threads 9   # or a filter: -- js_v3
//! cargo run --example compat-table               # -- --write: into README.md and docs/
//! ```

#[path = "../support/mod.rs"]
mod support;

mod harness;
mod modes;
mod report;

use modes::run_client;

#[test]
fn boto3_latest() {
    run_client(harness::boto3_latest());
}

#[test]
fn boto3_botocore_1_32() {
    run_client(harness::boto3_132());
}

#[test]
fn awscli_v1() {
    run_client(harness::awscli_v1());
}

#[test]
fn awscli_v2_debian() {
    run_client(harness::awscli_v2());
}

#[test]
fn js_v3() {
    run_client(harness::js_v3());
}

#[test]
fn js_v2() {
    run_client(harness::js_v2());
}

#[test]
fn rust_sdk() {
    run_client(harness::rust());
}

#[test]
fn serverless_node_handler() {
    run_client(harness::serverless(false));
}

#[test]
fn serverless_python_handler() {
    run_client(harness::serverless(true));
}
