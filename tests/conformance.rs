//! SPIRE's own KeyManager conformance suite (`keymanagertest` from github.com/spiffe/spire
//! v1.13.3) against the plugin binary, loaded through SPIRE's catalog exactly as spire-server
//! loads a `plugin_cmd` (tests/conformance/conformance_test.go), with the fake Key Vault started
//! here. Runs the release binary when `AZKV_RELEASE_BIN` is set (scripts/test-all.sh), else the
//! dev binary. Needs `go`; the Go build cache stays outside the clone (Go's default GOCACHE).

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use support::env::{plugin_env, vault_hcl};
use support::fake_azure::FakeAzure;

fn plugin_binary() -> PathBuf {
    match std::env::var_os("AZKV_RELEASE_BIN") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_BIN_EXE_azure_key_vault")),
    }
}

fn go_installed() -> bool {
    Command::new("go")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn spire_keymanager_conformance_suite_passes() {
    if !go_installed() {
        eprintln!(
            "SKIPPED spire_keymanager_conformance_suite_passes: `go` is not installed \
             (scripts/test-all.sh requires it)"
        );
        return;
    }
    let bin = plugin_binary();
    assert!(bin.is_file(), "plugin binary {bin:?} missing");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance");

    let fake = FakeAzure::start();
    let started = Instant::now();
    let out = Command::new("go")
        .args(["test", "-count=1", "-v", "-timeout=15m", "./..."])
        .current_dir(&dir)
        // go-plugin starts the plugin with the Go test's environment: trust the fake's CA and
        // use its Entra endpoint.
        .envs(plugin_env(&fake, &[]))
        .env("AZKV_CONFORMANCE_PLUGIN", &bin)
        .env("AZKV_CONFORMANCE_PLUGIN_DATA", vault_hcl(&fake))
        .output()
        .expect("run go test");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!(
        "go test in {} with {} took {:?}\n{stdout}\n{}",
        dir.display(),
        bin.display(),
        started.elapsed(),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "the conformance suite failed");
    // A `go test` that ran nothing (no test files, a filter) also exits 0.
    assert!(
        stdout.contains("--- PASS: TestKeyManagerConformance "),
        "TestKeyManagerConformance did not run and pass"
    );
    assert!(
        !stdout.contains("--- SKIP"),
        "a conformance test was skipped"
    );
}
