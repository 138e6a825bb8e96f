//! The Key Vault the tests run against (one per test binary) and a small REST client to
//! inspect it the way an operator would: list keys with their tags, read public keys, see
//! what was deleted. Auth uses the same managed-identity endpoint the plugin uses.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use super::fake_azure::{agent_trusting, FakeAzure};
use super::{die_with_parent, free_port, peers, read_to_string_lossy, tail, tls};
use azkv_testkit::poll_until;

/// Key Vault data-plane version the tests use for inspection (lowkey 3.x knows up to 7.6).
pub const API_VERSION: &str = "7.6";
/// Resource a managed-identity token is requested for (the public Key Vault resource).
pub const RESOURCE: &str = "https://vault.azure.net";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VaultKind {
    Lowkey,
    Fake,
}

pub struct Vault {
    pub kind: VaultKind,
    /// `https://127.0.0.1:<port>/`
    pub uri: String,
    /// PEM of the CA that issued the vault's TLS certificate (for `SSL_CERT_FILE`).
    pub ca_file: PathBuf,
    pub identity_endpoint: String,
    pub identity_header: String,
    agent: ureq::Agent,
    token: Mutex<Option<String>>,
    lowkey: Option<Lowkey>,
    /// The in-process fake, when this vault is it.
    pub fake: Option<&'static FakeAzure>,
}

struct Lowkey {
    child: Mutex<Child>,
    log: PathBuf,
}

/// One key as listed by the vault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VaultKey {
    pub name: String,
    pub kid: String,
    pub enabled: bool,
    pub tags: BTreeMap<String, String>,
}

/// The vault shared by every test of this binary.
pub fn vault() -> &'static Vault {
    static VAULT: OnceLock<&'static Vault> = OnceLock::new();
    VAULT.get_or_init(|| {
        let choice = std::env::var("AZKV_E2E_VAULT").unwrap_or_else(|_| "auto".into());
        let jar = || {
            std::env::var_os("LOWKEY_VAULT_JAR")
                .map(PathBuf::from)
                .filter(|p| p.is_file())
                .or_else(|| peers().lowkey_jar.clone())
        };
        let jar = if choice == "fake" { None } else { jar() };
        let v = match (choice.as_str(), jar) {
            ("lowkey", Some(jar)) | ("auto", Some(jar)) => &*Box::leak(Box::new(start_lowkey(&jar))),
            ("lowkey", None) => panic!(
                "AZKV_E2E_VAULT=lowkey but no lowkey-vault jar is available (set LOWKEY_VAULT_JAR).\n{}",
                peers().notes
            ),
            ("fake", _) | ("auto", None) => fake_vault(),
            (other, _) => panic!("AZKV_E2E_VAULT={other:?}: expected lowkey, fake or auto"),
        };
        super::announce(&format!(
            "e2e: Key Vault backend: {:?} at {}{}",
            v.kind,
            v.uri,
            if v.kind == VaultKind::Fake {
                " (in-repo fake; lowkey-vault jar unavailable or not selected)"
            } else {
                ""
            }
        ));
        v
    })
}

/// The shared vault lives in a static that is never dropped: remove its scratch directory
/// when the test process exits (the harness ends with `exit`, which runs atexit handlers).
fn remove_at_exit(dir: Option<PathBuf>) {
    static DIRS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
    extern "C" fn cleanup() {
        if let Ok(dirs) = DIRS.lock() {
            for d in dirs.iter() {
                let _ = std::fs::remove_dir_all(d);
            }
        }
    }
    let Some(dir) = dir else { return };
    let mut dirs = DIRS.lock().unwrap_or_else(|e| e.into_inner());
    if dirs.is_empty() {
        // SAFETY: registers a plain extern "C" function with no captured state.
        unsafe {
            libc::atexit(cleanup);
        }
    }
    dirs.push(dir);
}

/// The in-repo fake, whatever `AZKV_E2E_VAULT` selects: for tests that need what only the fake
/// offers (a public vault host name for Microsoft's Go SDK, the request log). It is the same
/// vault as `vault()` when that is the fake.
pub fn fake_vault() -> &'static Vault {
    static FAKE_VAULT: OnceLock<Vault> = OnceLock::new();
    FAKE_VAULT.get_or_init(start_fake)
}

fn start_fake() -> Vault {
    static FAKE: OnceLock<FakeAzure> = OnceLock::new();
    let fake: &'static FakeAzure = FAKE.get_or_init(FakeAzure::start);
    remove_at_exit(fake.ca_pem_path().parent().map(PathBuf::from));
    // The fake's clock stands still unless moved; keep it on real time so `created`/`updated`
    // mean what they mean in Azure (shared-key freshness, rotation order).
    std::thread::spawn(move || loop {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        fake.set_now(now);
        std::thread::sleep(Duration::from_millis(100));
    });
    Vault {
        kind: VaultKind::Fake,
        uri: fake.vault_uri(),
        ca_file: fake.ca_pem_path(),
        identity_endpoint: fake.identity_endpoint(),
        identity_header: fake.identity_header(),
        agent: agent_trusting(&fake.ca_pem()),
        token: Mutex::new(None),
        lowkey: None,
        fake: Some(fake),
    }
}

fn start_lowkey(jar: &std::path::Path) -> Vault {
    let dir = std::env::temp_dir().join(format!("azkv-e2e-lowkey-{}", super::short_id()));
    std::fs::create_dir_all(&dir).expect("lowkey dir");
    remove_at_exit(Some(dir.clone()));
    let pki = tls::make_lowkey_pki(&dir);
    let https_port = free_port();
    let token_port = free_port();
    let log = dir.join("lowkey.log");
    let java = std::env::var_os("LOWKEY_JAVA")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("JAVA_HOME").map(|h| PathBuf::from(h).join("bin/java")))
        .unwrap_or_else(|| PathBuf::from("java"));
    let mut cmd = Command::new(&java);
    cmd.arg("-jar")
        .arg(jar)
        .arg(format!("--server.port={https_port}"))
        .arg(format!("--app.token.port={token_port}"))
        .arg(format!(
            "--server.ssl.key-store=file:{}",
            pki.keystore_p12.display()
        ))
        .arg(format!(
            "--server.ssl.key-store-password={}",
            tls::KEYSTORE_PASSWORD
        ))
        .arg("--server.ssl.key-store-type=PKCS12")
        // Vaults are matched on the Host header including the port; ignore the port.
        .arg("--LOWKEY_VAULT_RELAXED_PORTS=true")
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).expect("lowkey log"))
        .stderr(Stdio::from(
            std::fs::OpenOptions::new()
                .append(true)
                .open(&log)
                .expect("lowkey log"),
        ));
    die_with_parent(&mut cmd);
    // PDEATHSIG follows the spawning thread: spawn from one that lives as long as the process.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(cmd.spawn());
        loop {
            std::thread::park();
        }
    });
    let child = rx
        .recv()
        .expect("lowkey spawner thread")
        .unwrap_or_else(|e| {
            panic!(
                "cannot start {} -jar {}: {e}",
                java.display(),
                jar.display()
            )
        });
    let ca_pem = std::fs::read_to_string(&pki.ca_pem).expect("read CA");
    let vault = Vault {
        kind: VaultKind::Lowkey,
        uri: format!("https://127.0.0.1:{https_port}/"),
        ca_file: pki.ca_pem,
        // lowkey's managed-identity simulation; it ignores the header and api-version.
        identity_endpoint: format!("http://127.0.0.1:{token_port}/metadata/identity/oauth2/token"),
        identity_header: "lowkey-ignores-this".into(),
        agent: agent_trusting(&ca_pem),
        token: Mutex::new(None),
        lowkey: Some(Lowkey {
            child: Mutex::new(child),
            log: log.clone(),
        }),
        fake: None,
    };
    let ping = format!("{}ping", vault.uri);
    let ready = poll_until(Duration::from_secs(180), Duration::from_millis(500), || {
        if let Some(lk) = &vault.lowkey {
            if let Ok(Some(status)) = lk.child.lock().expect("lowkey child").try_wait() {
                panic!(
                    "lowkey-vault exited during startup ({status}):\n{}",
                    tail(&read_to_string_lossy(&log), 60)
                );
            }
        }
        match vault.agent.get(&ping).call() {
            Ok(r) if r.status().as_u16() == 200 => Some(()),
            _ => None,
        }
    });
    if ready.is_none() {
        panic!(
            "lowkey-vault did not answer {ping} within 180s:\n{}",
            tail(&read_to_string_lossy(&log), 60)
        );
    }
    vault
}

impl Vault {
    /// What spire-server (and so the plugin) needs in its environment to reach this vault.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("IDENTITY_ENDPOINT".into(), self.identity_endpoint.clone()),
            ("IDENTITY_HEADER".into(), self.identity_header.clone()),
            ("SSL_CERT_FILE".into(), self.ca_file.display().to_string()),
        ]
    }

    /// The emulator's own log (lowkey only), for failure messages.
    pub fn log_tail(&self) -> String {
        match &self.lowkey {
            Some(lk) => tail(&read_to_string_lossy(&lk.log), 40),
            None => String::new(),
        }
    }

    fn fetch_token(&self) -> String {
        let url = format!(
            "{}?api-version=2019-08-01&resource={}",
            self.identity_endpoint,
            RESOURCE.replace(':', "%3A").replace('/', "%2F")
        );
        let mut resp = self
            .agent
            .get(&url)
            .header("X-IDENTITY-HEADER", &self.identity_header)
            .call()
            .unwrap_or_else(|e| panic!("managed identity endpoint {url}: {e}"));
        let status = resp.status().as_u16();
        let body = resp.body_mut().read_to_string().unwrap_or_default();
        assert_eq!(
            status, 200,
            "managed identity endpoint answered {status}: {body}"
        );
        let v: Value = serde_json::from_str(&body).expect("token JSON");
        v["access_token"]
            .as_str()
            .expect("access_token in the token response")
            .to_string()
    }

    fn token(&self) -> String {
        let mut t = self.token.lock().expect("token lock");
        t.get_or_insert_with(|| self.fetch_token()).clone()
    }

    /// GET on the vault; `path` is relative to the vault URI or an absolute `nextLink`.
    /// Returns the status and the JSON body (Null when empty or not JSON).
    pub fn get(&self, path: &str) -> (u16, Value) {
        let url = if path.starts_with("https://") {
            path.to_string()
        } else {
            let sep = if path.contains('?') { '&' } else { '?' };
            format!("{}{path}{sep}api-version={API_VERSION}", self.uri)
        };
        for attempt in 0..2 {
            let mut resp = self
                .agent
                .get(&url)
                .header("Authorization", &format!("Bearer {}", self.token()))
                .call()
                .unwrap_or_else(|e| panic!("GET {url}: {e}"));
            let status = resp.status().as_u16();
            let body = resp.body_mut().read_to_string().unwrap_or_default();
            if status == 401 && attempt == 0 {
                *self.token.lock().expect("token lock") = None;
                continue;
            }
            return (status, serde_json::from_str(&body).unwrap_or(Value::Null));
        }
        unreachable!("the loop returns on its second pass")
    }

    /// Every live key (all pages).
    pub fn list_keys(&self) -> Vec<VaultKey> {
        let mut out = Vec::new();
        let mut next = Some("keys?maxresults=25".to_string());
        while let Some(link) = next.take() {
            let (status, page) = self.get(&link);
            assert_eq!(status, 200, "list keys: {page}");
            for item in page["value"].as_array().cloned().unwrap_or_default() {
                let kid = item["kid"].as_str().unwrap_or_default().to_string();
                let name = kid
                    .split("/keys/")
                    .nth(1)
                    .unwrap_or_default()
                    .trim_end_matches('/')
                    .split('/')
                    .next()
                    .unwrap_or_default()
                    .to_string();
                let tags = item["tags"]
                    .as_object()
                    .map(|m| {
                        m.iter()
                            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                            .collect()
                    })
                    .unwrap_or_default();
                out.push(VaultKey {
                    name,
                    kid,
                    enabled: item["attributes"]["enabled"].as_bool().unwrap_or(true),
                    tags,
                });
            }
            next = page["nextLink"]
                .as_str()
                .filter(|s| !s.is_empty())
                .map(str::to_string);
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Live keys carrying tag `spire-server-td` = `trust_domain` (standard-mode keys and the
    /// per-server keys of shared mode).
    pub fn keys_of_trust_domain(&self, trust_domain: &str) -> Vec<VaultKey> {
        self.list_keys()
            .into_iter()
            .filter(|k| k.tags.get("spire-server-td").map(String::as_str) == Some(trust_domain))
            .collect()
    }

    /// Live keys whose name starts with `prefix`.
    pub fn keys_named(&self, prefix: &str) -> Vec<VaultKey> {
        self.list_keys()
            .into_iter()
            .filter(|k| k.name.starts_with(prefix))
            .collect()
    }

    /// The latest version's JWK of a live key, `None` if there is no such key.
    pub fn key_jwk(&self, name: &str) -> Option<Value> {
        let (status, body) = self.get(&format!("keys/{name}"));
        match status {
            200 => Some(body["key"].clone()),
            404 => None,
            s => panic!("get key {name}: {s} {body}"),
        }
    }

    /// Every version of a key (newest order not guaranteed), as listed by the vault.
    pub fn key_versions(&self, name: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut next = Some(format!("keys/{name}/versions?maxresults=25"));
        while let Some(link) = next.take() {
            let (status, page) = self.get(&link);
            assert_eq!(status, 200, "list versions of {name}: {page}");
            out.extend(page["value"].as_array().cloned().unwrap_or_default());
            next = page["nextLink"]
                .as_str()
                .filter(|s| !s.is_empty())
                .map(str::to_string);
        }
        out
    }

    /// The JWK of one version.
    pub fn key_version_jwk(&self, name: &str, version: &str) -> Value {
        let (status, body) = self.get(&format!("keys/{name}/{version}"));
        assert_eq!(status, 200, "get key {name}/{version}: {body}");
        body["key"].clone()
    }

    /// True when `name` is gone from the live keys and sits in the soft-deleted list.
    pub fn is_deleted(&self, name: &str) -> bool {
        let (live, _) = self.get(&format!("keys/{name}"));
        let (deleted, _) = self.get(&format!("deletedkeys/{name}"));
        live == 404 && deleted == 200
    }
}
