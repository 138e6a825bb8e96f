//! One real `spire-server` per test (or two, for shared keys): its own data dir, sqlite
//! datastore, API socket and bind port; the plugin declared through `plugin_cmd` and
//! `plugin_checksum`; the server config written as HCL or as JSON.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use azkv_testkit::poll_until;

use super::vault::Vault;
use super::verify::Bundle;
use super::{
    die_with_parent, free_port, peers, plugin_bin, read_to_string_lossy, run, sha256_file, tail,
    TempDir,
};

/// How long a (re)started server may take to report healthy. spire-server plus the plugin
/// start in a few seconds; the margin is for a busy 2-core CI machine.
pub const HEALTHY_WITHIN: Duration = Duration::from_secs(90);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigFormat {
    Hcl,
    Json,
}

/// What differs between the servers of the tests.
#[derive(Debug, Clone)]
pub struct ServerSpec {
    /// Short label for messages ("a", "b").
    pub label: String,
    pub trust_domain: String,
    pub ca_ttl: String,
    pub x509_svid_ttl: String,
    pub jwt_svid_ttl: String,
    pub ca_key_type: String,
    pub jwt_key_type: String,
    pub format: ConfigFormat,
    /// The plugin's `plugin_data`, as a JSON object (nested objects become HCL blocks).
    pub plugin_data: Value,
    /// Extra environment for spire-server (inherited by the plugin), e.g. test hooks.
    pub env: Vec<(String, String)>,
    /// SPIRE's own built-in `azure_key_vault` (no `plugin_cmd` / `plugin_checksum`) instead of
    /// the plugin binary.
    pub builtin: bool,
    /// Serve SPIRE's telemetry as Prometheus on 127.0.0.1:<port> (HCL configs only).
    pub prometheus_port: Option<u16>,
}

impl ServerSpec {
    /// A standard-mode server: long CA TTL (no rotation during the test), EC P-256 keys.
    pub fn new(label: &str, trust_domain: &str, vault: &Vault) -> ServerSpec {
        ServerSpec {
            label: label.to_string(),
            trust_domain: trust_domain.to_string(),
            ca_ttl: "1h".into(),
            x509_svid_ttl: "5m".into(),
            jwt_svid_ttl: "5m".into(),
            ca_key_type: "ec-p256".into(),
            jwt_key_type: "ec-p256".into(),
            format: ConfigFormat::Hcl,
            plugin_data: json!({ "key_vault_uri": vault.uri }),
            env: Vec::new(),
            builtin: false,
            prometheus_port: None,
        }
    }

    pub fn plugin_data_set(&mut self, key: &str, value: Value) -> &mut Self {
        if let Value::Object(m) = &mut self.plugin_data {
            m.insert(key.to_string(), value);
        }
        self
    }
}

pub struct SpireServer {
    pub spec: ServerSpec,
    pub dir: TempDir,
    pub socket: PathBuf,
    pub config: PathBuf,
    pub log: PathBuf,
    pub port: u16,
    child: Option<Child>,
    vault_env: Vec<(String, String)>,
}

fn hcl_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Renders a JSON object as HCL1 body lines: strings/numbers/bools as attributes, objects as
/// blocks.
fn hcl_body(v: &Value, indent: usize) -> String {
    let pad = " ".repeat(indent);
    let mut out = String::new();
    if let Value::Object(m) = v {
        for (k, val) in m {
            match val {
                Value::Object(_) => out.push_str(&format!(
                    "{pad}{k} {{\n{}{pad}}}\n",
                    hcl_body(val, indent + 4)
                )),
                Value::String(s) => out.push_str(&format!("{pad}{k} = {}\n", hcl_string(s))),
                Value::Array(items) => {
                    let items: Vec<String> = items
                        .iter()
                        .map(|i| match i {
                            Value::String(s) => hcl_string(s),
                            other => other.to_string(),
                        })
                        .collect();
                    out.push_str(&format!("{pad}{k} = [{}]\n", items.join(", ")))
                }
                other => out.push_str(&format!("{pad}{k} = {other}\n")),
            }
        }
    }
    out
}

impl SpireServer {
    /// Writes the config; does not start the server.
    pub fn new(spec: ServerSpec, vault: &Vault) -> SpireServer {
        let dir = TempDir::new(&format!("azkv-e2e-{}", spec.label));
        let socket = dir.path.join("api.sock");
        let port = free_port();
        std::fs::create_dir_all(dir.path.join("data")).expect("data dir");
        let file = match spec.format {
            ConfigFormat::Hcl => "server.conf",
            ConfigFormat::Json => "server.json",
        };
        let s = SpireServer {
            log: dir.path.join("spire-server.log"),
            config: dir.path.join(file),
            spec,
            socket,
            port,
            child: None,
            vault_env: vault.env(),
            dir,
        };
        s.write_config();
        s
    }

    /// Replaces the spec of a stopped server and rewrites its config; the data dir, datastore,
    /// socket and port stay (the same server, reconfigured).
    pub fn reconfigure(&mut self, spec: ServerSpec) {
        assert!(self.child.is_none(), "reconfigure a running server");
        assert_eq!(spec.format, self.spec.format, "config format cannot change");
        self.spec = spec;
        self.write_config();
    }

    fn write_config(&self) {
        let spec = &self.spec;
        let socket = &self.socket;
        let port = self.port;
        let data = self.dir.path.join("data");
        let server = json!({
            "bind_address": "127.0.0.1",
            "bind_port": port,
            "socket_path": socket.display().to_string(),
            "trust_domain": spec.trust_domain,
            "data_dir": data.display().to_string(),
            "log_level": "DEBUG",
            "log_format": "json",
            "ca_ttl": spec.ca_ttl,
            "default_x509_svid_ttl": spec.x509_svid_ttl,
            "default_jwt_svid_ttl": spec.jwt_svid_ttl,
            "ca_key_type": spec.ca_key_type,
            "jwt_key_type": spec.jwt_key_type,
        });
        let datastore = json!({
            "database_type": "sqlite3",
            "connection_string": data.join("datastore.sqlite3").display().to_string(),
        });
        let km = if spec.builtin {
            json!({})
        } else {
            let plugin = plugin_bin();
            assert!(
                plugin.is_file(),
                "plugin binary {} does not exist",
                plugin.display()
            );
            json!({
                "plugin_cmd": plugin.display().to_string(),
                "plugin_checksum": sha256_file(&plugin),
            })
        };
        let (_, text) = match spec.format {
            ConfigFormat::Hcl => {
                let telemetry = match spec.prometheus_port {
                    Some(p) => format!(
                        "telemetry {{\n    Prometheus {{\n        host = \"127.0.0.1\"\n        port = {p}\n    }}\n}}\n\n"
                    ),
                    None => String::new(),
                };
                let text = format!(
                    "server {{\n{server}}}\n\n{telemetry}plugins {{\n    DataStore \"sql\" {{\n        plugin_data {{\n{ds}        }}\n    }}\n    KeyManager \"azure_key_vault\" {{\n{km}        plugin_data {{\n{pd}        }}\n    }}\n    NodeAttestor \"join_token\" {{\n        plugin_data {{}}\n    }}\n}}\n",
                    server = hcl_body(&server, 4),
                    ds = hcl_body(&datastore, 12),
                    km = hcl_body(&km, 8),
                    pd = hcl_body(&spec.plugin_data, 12),
                );
                ("server.conf", text)
            }
            ConfigFormat::Json => {
                let mut km_obj: Map<String, Value> = km.as_object().cloned().unwrap_or_default();
                km_obj.insert("plugin_data".into(), spec.plugin_data.clone());
                let plugins = json!({
                    "DataStore": { "sql": { "plugin_data": datastore } },
                    "KeyManager": { "azure_key_vault": Value::Object(km_obj) },
                    "NodeAttestor": { "join_token": { "plugin_data": {} } },
                });
                // "server" must come before "plugins": with "plugins" first, SPIRE 1.13's
                // unknown-key check (HCL1 JSON parser) rejects the plugin blocks as unknown
                // top-level keys. serde_json sorts keys, so the top level is written by hand.
                let pretty = |v: &Value| serde_json::to_string_pretty(v).expect("config JSON");
                (
                    "server.json",
                    format!(
                        "{{\n\"server\": {},\n\"plugins\": {}\n}}\n",
                        pretty(&server),
                        pretty(&plugins)
                    ),
                )
            }
        };
        std::fs::write(&self.config, text).expect("write server config");
    }

    /// `spire-server validate`: the config parses (catches harness mistakes early).
    pub fn validate_config(&self) {
        let (ok, out, err) = run(Command::new(&peers().spire_server)
            .args(["validate", "-config"])
            .arg(&self.config));
        assert!(
            ok,
            "[{}] spire-server validate rejected {}:\n{out}\n{err}\n{}",
            self.spec.label,
            self.config.display(),
            read_to_string_lossy(&self.config)
        );
    }

    /// Starts spire-server (logs appended to `self.log`).
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "already running");
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open spire-server log");
        let mut cmd = Command::new(&peers().spire_server);
        cmd.arg("run")
            .arg("-config")
            .arg(&self.config)
            .current_dir(&self.dir.path)
            .env_clear()
            .envs(self.vault_env.iter().map(|(k, v)| (k, v)))
            .envs(self.spec.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log);
        for var in ["PATH", "HOME", "TMPDIR"] {
            if let Some(v) = std::env::var_os(var) {
                cmd.env(var, v);
            }
        }
        die_with_parent(&mut cmd);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", peers().spire_server.display()));
        self.child = Some(child);
    }

    /// Waits until `spire-server healthcheck` passes; panics with the log if the server
    /// exits or does not become healthy in time.
    pub fn wait_healthy(&mut self) -> Duration {
        let started = Instant::now();
        let label = self.spec.label.clone();
        let ok = poll_until(HEALTHY_WITHIN, Duration::from_millis(300), || {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!(
                        "[{label}] spire-server exited before becoming healthy ({status}):\n{}",
                        tail(&read_to_string_lossy(&self.log), 60)
                    );
                }
            }
            self.healthcheck().then_some(())
        });
        if ok.is_none() {
            panic!(
                "[{label}] spire-server not healthy within {HEALTHY_WITHIN:?}:\n{}",
                tail(&read_to_string_lossy(&self.log), 60)
            );
        }
        started.elapsed()
    }

    pub fn start_healthy(&mut self) -> Duration {
        self.start();
        self.wait_healthy()
    }

    /// `spire-server healthcheck` exit status.
    pub fn healthcheck(&self) -> bool {
        if !self.socket.exists() {
            return false;
        }
        let (ok, out, _) = self.cli(&["healthcheck"]);
        ok && out.contains("healthy")
    }

    /// SIGTERM, then up to 20 s for a clean exit (SPIRE unloads the plugin), then SIGKILL.
    /// Returns whether the server exited by itself.
    pub fn stop(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        }
        let clean = poll_until(Duration::from_secs(20), Duration::from_millis(100), || {
            child.try_wait().ok().flatten()
        })
        .is_some();
        if !clean {
            let _ = child.kill();
            let _ = child.wait();
        }
        clean
    }

    /// Runs a spire-server CLI subcommand against this server's socket.
    pub fn cli(&self, args: &[&str]) -> (bool, String, String) {
        let sock = self.socket.display().to_string();
        let mut full: Vec<&str> = args.to_vec();
        full.extend(["-socketPath", sock.as_str()]);
        run(Command::new(&peers().spire_server).args(&full))
    }

    fn cli_ok(&self, args: &[&str]) -> String {
        let (ok, out, err) = self.cli(args);
        assert!(
            ok,
            "[{}] spire-server {} failed:\n{out}\n{err}\n--- server log ---\n{}",
            self.spec.label,
            args.join(" "),
            tail(&read_to_string_lossy(&self.log), 30)
        );
        out
    }

    /// `localauthority <kind> prepare` then `activate`, `kind` being `x509` or `jwt`: SPIRE
    /// generates a key for the next slot and switches to it, as a CA rotation does, without
    /// waiting for a TTL. Returns the activated authority id.
    pub fn rotate_authority(&self, kind: &str) -> String {
        let out = self.cli_ok(&["localauthority", kind, "prepare", "-output", "json"]);
        let v: Value = serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("localauthority {kind} prepare output ({e}): {out}"));
        let id = v["prepared_authority"]["authority_id"]
            .as_str()
            .unwrap_or_else(|| panic!("no prepared authority id: {out}"))
            .to_string();
        self.cli_ok(&["localauthority", kind, "activate", "-authorityID", &id]);
        id
    }

    /// `localauthority <kind> prepare` only: SPIRE generates a key for the next slot.
    pub fn prepare_authority(&self, kind: &str) {
        self.cli_ok(&["localauthority", kind, "prepare"]);
    }

    /// `bundle show -format spiffe` (JWKS).
    pub fn bundle(&self) -> Bundle {
        Bundle::parse(&self.cli_ok(&["bundle", "show", "-format", "spiffe"]))
    }

    /// `bundle show` (PEM), written to a file; returns its path.
    pub fn bundle_pem(&self) -> PathBuf {
        let pem = self.cli_ok(&["bundle", "show", "-format", "pem"]);
        let path = self
            .dir
            .path
            .join(format!("bundle-{}.pem", super::short_id()));
        std::fs::write(&path, pem).expect("write bundle");
        path
    }

    pub fn spiffe_id(&self, path: &str) -> String {
        format!("spiffe://{}/{path}", self.spec.trust_domain)
    }

    /// `x509 mint -write <dir>`; returns the dir holding svid.pem, key.pem and bundle.pem.
    pub fn x509_mint(&self, spiffe_id: &str) -> PathBuf {
        let out = self.dir.path.join(format!("x509-{}", super::short_id()));
        std::fs::create_dir_all(&out).expect("mint dir");
        let out_s = out.display().to_string();
        self.cli_ok(&["x509", "mint", "-spiffeID", spiffe_id, "-write", &out_s]);
        out
    }

    /// `jwt mint`; returns the token.
    pub fn jwt_mint(&self, spiffe_id: &str, audience: &str) -> String {
        let out = self.cli_ok(&["jwt", "mint", "-spiffeID", spiffe_id, "-audience", audience]);
        out.lines()
            .map(str::trim)
            .find(|l| l.split('.').count() == 3 && l.starts_with("ey"))
            .unwrap_or_else(|| panic!("no token in jwt mint output:\n{out}"))
            .to_string()
    }

    /// Every JSON log line of spire-server so far.
    pub fn log_entries(&self) -> Vec<Value> {
        read_to_string_lossy(&self.log)
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(Value::is_object)
            .collect()
    }

    /// The log lines that came from the plugin (SPIRE adds `plugin_name`).
    pub fn plugin_log(&self) -> Vec<Value> {
        self.log_entries()
            .into_iter()
            .filter(|e| e["plugin_name"] == "azure_key_vault")
            .collect()
    }

    pub fn log_text(&self) -> String {
        read_to_string_lossy(&self.log)
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }
}

impl Drop for SpireServer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "[{}] spire-server log tail ({}):\n{}",
                self.spec.label,
                self.log.display(),
                tail(&read_to_string_lossy(&self.log), 25)
            );
        }
        self.stop();
    }
}
