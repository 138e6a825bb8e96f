//! The shipped binary for tests: `AZKV_RELEASE_BIN` when set (scripts/test-all.sh builds it
//! first), otherwise built with scripts/build-release.sh.

use std::path::PathBuf;
use std::process::Command;

pub fn release_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("AZKV_RELEASE_BIN") {
        return PathBuf::from(p);
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/build-release.sh");
    let out = Command::new("bash")
        .arg(script)
        .output()
        .expect("run build-release.sh");
    assert!(
        out.status.success(),
        "scripts/build-release.sh failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("AZKV_RELEASE_BIN="))
        .unwrap_or_else(|| panic!("no AZKV_RELEASE_BIN in {stdout}"));
    PathBuf::from(line)
}
