//! End-to-end harness: the real `spire-server` (installed by `.ci/install-peers.sh`) loading the
//! plugin binary through `plugin_cmd`, against a Key Vault emulator reached over real TLS with
//! managed-identity auth.
//!
//! Vault backends (`AZKV_E2E_VAULT`):
//! - `lowkey`: lowkey-vault (`java -jar`), the jar from `LOWKEY_VAULT_JAR` or the install script;
//!   fails loudly when there is none.
//! - `fake`: the in-repo fake Key Vault (tests/support/fake_azure) served from this test process.
//! - `auto` (default): lowkey when the install script found a jar, else the fake, announced on
//!   stderr (lowkey-vault-app is not published to Maven Central, see the README).
//!
//! One vault per test binary (a `OnceLock`); each test uses its own trust domain, so keys of
//! different tests never mix (the plugin scopes discovery and the stale sweep by trust domain).
//! The switching tests (built-in vs plugin) always use the fake (`vault::fake_vault`): Microsoft's
//! Go SDK needs a `*.vault.azure.net` host, which the fake's certificate covers.

#![allow(dead_code)]

pub mod proxy;
pub mod spire;
pub mod tls;
pub mod vault;
pub mod verify;

// The fake's files live under tests/support; the inline module keeps its nested module paths
// (fake_azure/http.rs, ...) resolving as they do from tests/support/mod.rs.
#[path = "../support"]
#[allow(dead_code, clippy::all)]
mod support_files {
    pub mod fake_azure;
}
pub use support_files::fake_azure;

use std::collections::HashMap;
use std::io::Read;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Instant;

use sha2::{Digest, Sha256};

/// Paths printed by `.ci/install-peers.sh`.
#[derive(Debug, Clone)]
pub struct Peers {
    pub spire_server: PathBuf,
    /// `None` when the jar could not be had (the script explains why on stderr).
    pub lowkey_jar: Option<PathBuf>,
    /// The script's stderr (warnings), shown once.
    pub notes: String,
}

/// The repository root: this crate's manifest dir, or `AZKV_REPO_DIR` (for out-of-tree builds).
pub fn repo_dir() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    if manifest.join(".ci/install-peers.sh").is_file() {
        return manifest;
    }
    match std::env::var_os("AZKV_REPO_DIR") {
        Some(d) => PathBuf::from(d),
        None => panic!(
            "cannot find .ci/install-peers.sh under {}; set AZKV_REPO_DIR",
            manifest.display()
        ),
    }
}

/// Runs `.ci/install-peers.sh` once per test binary (it caches under ~/.cache/azkv-plugin).
/// Panics with the script's output when it fails: these tests never skip silently.
pub fn peers() -> &'static Peers {
    static PEERS: OnceLock<Peers> = OnceLock::new();
    PEERS.get_or_init(|| {
        let script = repo_dir().join(".ci/install-peers.sh");
        let started = Instant::now();
        let out = Command::new("bash")
            .arg(&script)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        if !out.status.success() {
            panic!(
                "{} failed ({}): the end-to-end tests need spire-server and a Key Vault emulator.\n\
                 --- stderr (tail) ---\n{}\n--- stdout ---\n{stdout}",
                script.display(),
                out.status,
                tail(&stderr, 40)
            );
        }
        let vars: HashMap<String, String> = stdout
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        let need = |k: &str| -> PathBuf {
            let v = vars
                .get(k)
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| panic!("install-peers.sh printed no {k}=…; stdout:\n{stdout}"));
            let p = PathBuf::from(v);
            assert!(p.is_file(), "{k}={} does not exist", p.display());
            p
        };
        let lowkey_jar = vars
            .get("LOWKEY_VAULT_JAR")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .filter(|p| p.is_file());
        let peers = Peers {
            spire_server: need("SPIRE_SERVER_BIN"),
            lowkey_jar,
            notes: stderr
                .lines()
                .filter(|l| l.starts_with("install-peers"))
                .collect::<Vec<_>>()
                .join("\n"),
        };
        if !peers.notes.is_empty() {
            announce(&peers.notes);
        }
        announce(&format!(
            "e2e: peers ready in {:.1}s: {}{}",
            started.elapsed().as_secs_f64(),
            peers.spire_server.display(),
            peers
                .lowkey_jar
                .as_ref()
                .map(|j| format!(", {}", j.display()))
                .unwrap_or_default()
        ));
        peers
    })
}

/// Writes straight to the process's stderr, past the test harness's output capture, so the
/// choices that shape a run (which vault, which peers) show in every CI log.
pub fn announce(line: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// The plugin under test: `AZKV_PLUGIN_BIN`, else the binary cargo built for this test run.
pub fn plugin_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("AZKV_PLUGIN_BIN") {
        return PathBuf::from(p);
    }
    match option_env!("CARGO_BIN_EXE_azure_key_vault") {
        Some(p) => PathBuf::from(p),
        None => panic!("no plugin binary: set AZKV_PLUGIN_BIN"),
    }
}

/// Lowercase hex SHA-256 of a file, for `plugin_checksum`.
pub fn sha256_file(path: &Path) -> String {
    let data =
        std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    hex(&Sha256::digest(&data))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

/// Makes the child die with the thread that spawned it (tests own their processes; the
/// shared fixture spawns from a thread that never exits), so nothing outlives a killed run.
pub fn die_with_parent(cmd: &mut Command) -> &mut Command {
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    }
}

/// The last `n` lines of `s`.
pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

pub fn read_to_string_lossy(path: &Path) -> String {
    let mut buf = Vec::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        let _ = f.read_to_end(&mut buf);
    }
    String::from_utf8_lossy(&buf).to_string()
}

/// A fresh scratch directory under the system temp dir, removed on drop unless the test
/// failed (then it is kept and its path printed, for the logs).
pub struct TempDir {
    pub path: PathBuf,
}

impl TempDir {
    pub fn new(prefix: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!("{prefix}-{}", short_id()));
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir { path }
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("e2e: keeping {} for inspection", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// 10 lowercase hex characters: unique enough for trust domains and directory names.
pub fn short_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..10].to_string()
}

/// Runs a command to completion, returning (success, stdout, stderr).
pub fn run(cmd: &mut Command) -> (bool, String, String) {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}
