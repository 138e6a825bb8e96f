//! A SPIRE-like host: launches the built plugin binary exactly as spire-server does (magic cookie
//! and go-plugin variables in the environment, stdout handshake, gRPC over the unix socket with
//! the broker stream held open), drives its RPCs, and checks every stderr line is hclog JSON.

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::SinkExt;
use grpcio::{
    CallOption, ChannelBuilder, Client, ClientDuplexReceiver, ClientDuplexSender, EnvBuilder,
    Environment, RpcContext, Server, ServerBuilder, ServerCredentials, ServiceBuilder, UnarySink,
    WriteFlags,
};

use azkv::proto::config::*;
use azkv::proto::goplugin::{self, ConnInfo};
use azkv::proto::init::*;
use azkv::proto::keymanager::*;
use azkv::proto::metrics::{self, AddSampleRequest, IncrCounterRequest};
use azkv::proto::{health, init};

/// The plugin binary Cargo built for the integration tests. Targets Cargo does not give it to
/// (the benchmark example) name a binary with `PluginProcess::launch_bin`.
pub const BIN: &str = match option_env!("CARGO_BIN_EXE_azure_key_vault") {
    Some(path) => path,
    None => "azure_key_vault",
};

pub struct PluginProcess {
    pub child: Child,
    pub socket: PathBuf,
    pub handshake: String,
    /// From `exec` to the handshake line read on stdout.
    pub handshake_after: Duration,
    _env: Arc<Environment>,
    client: Client,
    broker: Option<(ClientDuplexSender<ConnInfo>, ClientDuplexReceiver<ConnInfo>)>,
    stderr: Arc<Mutex<Vec<String>>>,
    stdout_rest: Arc<Mutex<Vec<u8>>>,
    pub exited: Option<std::process::ExitStatus>,
    host_services: Option<HostServices>,
}

/// One call the host's Metrics service received.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedMetric {
    /// `IncrCounter` or `AddSample`.
    pub method: &'static str,
    pub key: Vec<String>,
    pub val: f32,
    pub labels: Vec<(String, String)>,
}

/// spire-server's host services as the plugin sees them: a gRPC server of the host's own on a
/// unix socket, announced on the broker stream. Only Metrics is served; it records each call.
struct HostServices {
    /// In a Mutex only so `PluginProcess` stays `Sync` (tests share it across threads).
    _server: Mutex<Server>,
    socket: PathBuf,
    received: Arc<Mutex<Vec<ReceivedMetric>>>,
    /// The next this-many Metrics calls are answered UNAVAILABLE and not recorded.
    refuse: Arc<std::sync::atomic::AtomicUsize>,
}

/// Takes one refusal from `refuse` if any is left.
fn refused(refuse: &std::sync::atomic::AtomicUsize) -> bool {
    use std::sync::atomic::Ordering;
    refuse
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

fn unavailable() -> grpcio::RpcStatus {
    grpcio::RpcStatus::with_message(grpcio::RpcStatusCode::UNAVAILABLE, "host busy".into())
}

impl HostServices {
    fn start(env: &Arc<Environment>) -> HostServices {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let socket =
            std::env::temp_dir().join(format!("azkv-host-{}-{n}.sock", std::process::id()));
        let _ = std::fs::remove_file(&socket);
        let received = Arc::new(Mutex::new(Vec::new()));
        let (counters, samples) = (Arc::clone(&received), Arc::clone(&received));
        let refuse = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (refuse_counters, refuse_samples) = (Arc::clone(&refuse), Arc::clone(&refuse));
        let labels = |l: &[metrics::Label]| -> Vec<(String, String)> {
            l.iter()
                .map(|l| (l.name.clone(), l.value.clone()))
                .collect()
        };
        let service = ServiceBuilder::new()
            .add_unary_handler(
                &metrics::INCR_COUNTER,
                move |ctx: RpcContext<'_>,
                      req: IncrCounterRequest,
                      sink: UnarySink<metrics::Empty>| {
                    if refused(&refuse_counters) {
                        ctx.spawn(async move {
                            let _ = sink.fail(unavailable()).await;
                        });
                        return;
                    }
                    counters.lock().unwrap().push(ReceivedMetric {
                        method: "IncrCounter",
                        key: req.key,
                        val: req.val,
                        labels: labels(&req.labels),
                    });
                    ctx.spawn(async move {
                        let _ = sink.success(metrics::Empty {}).await;
                    });
                },
            )
            .add_unary_handler(
                &metrics::ADD_SAMPLE,
                move |ctx: RpcContext<'_>,
                      req: AddSampleRequest,
                      sink: UnarySink<metrics::Empty>| {
                    if refused(&refuse_samples) {
                        ctx.spawn(async move {
                            let _ = sink.fail(unavailable()).await;
                        });
                        return;
                    }
                    samples.lock().unwrap().push(ReceivedMetric {
                        method: "AddSample",
                        key: req.key,
                        val: req.val,
                        labels: labels(&req.labels),
                    });
                    ctx.spawn(async move {
                        let _ = sink.success(metrics::Empty {}).await;
                    });
                },
            )
            .build();
        let mut server = ServerBuilder::new(Arc::clone(env))
            .register_service(service)
            .build()
            .expect("host services server");
        server
            .add_listening_port(
                format!("unix:{}", socket.display()),
                ServerCredentials::insecure(),
            )
            .expect("host services socket");
        server.start();
        HostServices {
            _server: Mutex::new(server),
            socket,
            received,
            refuse,
        }
    }
}

impl Drop for HostServices {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// The status of a failed RPC as (code, message).
pub type RpcResult<T> = Result<T, (grpcio::RpcStatusCode, String)>;

fn err(e: grpcio::Error) -> (grpcio::RpcStatusCode, String) {
    match e {
        grpcio::Error::RpcFailure(s) => (s.code(), s.message().to_string()),
        other => (grpcio::RpcStatusCode::UNKNOWN, other.to_string()),
    }
}

impl PluginProcess {
    /// Starts the plugin with a clean environment plus `envs`, reads the handshake line, dials
    /// the socket and opens the broker stream (sending the host-services ConnInfo like SPIRE).
    pub fn launch(envs: &[(&str, &str)]) -> PluginProcess {
        Self::launch_bin(std::path::Path::new(BIN), envs)
    }

    /// `launch` with another plugin binary (the benchmark drives the release build).
    pub fn launch_bin(bin: &std::path::Path, envs: &[(&str, &str)]) -> PluginProcess {
        Self::launch_cmd(Command::new(bin), envs, None)
    }

    /// `launch` through a command that ends by exec'ing the plugin with `root` as its `/`
    /// (`chroot ROOT /azure_key_vault`, or `unshare -m` + mounts + chroot): the socket path the
    /// plugin prints is inside its root, so it is dialed under `root` from here.
    pub fn launch_in_root(
        cmd: Command,
        envs: &[(&str, &str)],
        root: &std::path::Path,
    ) -> PluginProcess {
        Self::launch_cmd(cmd, envs, Some(root))
    }

    fn launch_cmd(
        mut cmd: Command,
        envs: &[(&str, &str)],
        root: Option<&std::path::Path>,
    ) -> PluginProcess {
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("KeyManager", "KeyManager")
            .env("PLUGIN_MIN_PORT", "10000")
            .env("PLUGIN_MAX_PORT", "25000")
            .env("PLUGIN_PROTOCOL_VERSIONS", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let started = Instant::now();
        let mut child = cmd.spawn().expect("spawn plugin");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        {
            let lines = Arc::clone(&stderr);
            let pipe = child.stderr.take().unwrap();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    match line {
                        Ok(l) => lines.lock().unwrap().push(l),
                        Err(_) => break,
                    }
                }
            });
        }
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut handshake = String::new();
        stdout.read_line(&mut handshake).expect("read handshake");
        let handshake_after = started.elapsed();
        let stdout_rest = Arc::new(Mutex::new(Vec::new()));
        {
            let rest = Arc::clone(&stdout_rest);
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                loop {
                    match stdout.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => rest.lock().unwrap().extend_from_slice(&buf[..n]),
                    }
                }
            });
        }
        let parts: Vec<&str> = handshake.trim().split('|').collect();
        assert_eq!(parts.len(), 6, "handshake {handshake:?}");
        assert_eq!(&parts[..3], &["1", "1", "unix"], "handshake {handshake:?}");
        assert_eq!(parts[4], "grpc");
        assert_eq!(parts[5], "");
        let socket = match root {
            Some(r) => r.join(parts[3].trim_start_matches('/')),
            None => PathBuf::from(parts[3]),
        };
        let env = Arc::new(EnvBuilder::new().cq_count(1).build());
        let channel = ChannelBuilder::new(Arc::clone(&env))
            .default_authority("unused")
            .connect(&format!("unix:{}", socket.display()));
        let client = Client::new(channel);
        let mut p = PluginProcess {
            child,
            socket,
            handshake,
            handshake_after,
            _env: env,
            client,
            broker: None,
            stderr,
            stdout_rest,
            exited: None,
            host_services: None,
        };
        p.open_broker();
        p
    }

    /// The gRPC client on the plugin's socket (one channel, like spire-server's), for callers
    /// that drive it from several threads.
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    fn opt() -> CallOption {
        CallOption::default().timeout(Duration::from_secs(30))
    }

    fn open_broker(&mut self) {
        let (mut tx, rx) = self
            .client
            .duplex_streaming(&goplugin::BROKER_START_STREAM, CallOption::default())
            .expect("broker stream");
        // Like spire-server: its host services listen on a socket of their own, announced
        // under broker id 1 before Init.
        let host = HostServices::start(&self._env);
        let info = ConnInfo {
            service_id: 1,
            network: "unix".into(),
            address: host.socket.display().to_string(),
            knock: None,
        };
        futures_executor::block_on(tx.send((info, WriteFlags::default()))).expect("send ConnInfo");
        self.broker = Some((tx, rx));
        self.host_services = Some(host);
    }

    /// Init with the host services spire-server offers, Metrics among them.
    pub fn init(&self) -> RpcResult<Vec<String>> {
        self.init_offering(&[
            "spire.hostservice.server.identityprovider.v1.IdentityProvider",
            "spire.hostservice.server.agentstore.v1.AgentStore",
            metrics::SERVICE_NAME,
        ])
    }

    /// Init naming `host_services` as the host's services.
    pub fn init_offering(&self, host_services: &[&str]) -> RpcResult<Vec<String>> {
        let req = InitRequest {
            host_service_names: host_services.iter().map(|s| s.to_string()).collect(),
        };
        self.client
            .unary_call(&init::INIT, &req, Self::opt())
            .map(|r| r.plugin_service_names)
            .map_err(err)
    }

    /// Every call the host's Metrics service received so far.
    pub fn received_metrics(&self) -> Vec<ReceivedMetric> {
        self.host_services
            .as_ref()
            .map(|h| h.received.lock().unwrap().clone())
            .unwrap_or_default()
    }

    /// The host's Metrics service answers the next `n` calls UNAVAILABLE (a host in trouble).
    pub fn refuse_metrics(&self, n: usize) {
        if let Some(h) = &self.host_services {
            h.refuse.store(n, std::sync::atomic::Ordering::SeqCst);
        }
    }

    pub fn health(&self, service: &str) -> RpcResult<i32> {
        let req = health::HealthCheckRequest {
            service: service.into(),
        };
        self.client
            .unary_call(&health::CHECK, &req, Self::opt())
            .map(|r| r.status)
            .map_err(err)
    }

    pub fn configure(&self, trust_domain: &str, hcl: &str) -> RpcResult<()> {
        let req = ConfigureRequest {
            core_configuration: Some(CoreConfiguration {
                trust_domain: trust_domain.into(),
            }),
            hcl_configuration: hcl.into(),
        };
        self.client
            .unary_call(&CONFIGURE, &req, Self::opt())
            .map(|_| ())
            .map_err(err)
    }

    pub fn configure_raw(&self, req: &ConfigureRequest) -> RpcResult<()> {
        self.client
            .unary_call(&CONFIGURE, req, Self::opt())
            .map(|_| ())
            .map_err(err)
    }

    pub fn validate(&self, trust_domain: &str, hcl: &str) -> RpcResult<ValidateResponse> {
        let req = ValidateRequest {
            core_configuration: Some(CoreConfiguration {
                trust_domain: trust_domain.into(),
            }),
            hcl_configuration: hcl.into(),
        };
        self.client
            .unary_call(&VALIDATE, &req, Self::opt())
            .map_err(err)
    }

    pub fn generate_key(&self, id: &str, key_type: KeyType) -> RpcResult<PublicKey> {
        let req = GenerateKeyRequest {
            key_id: id.into(),
            key_type: key_type as i32,
        };
        self.client
            .unary_call(&GENERATE_KEY, &req, Self::opt())
            .map_err(err)
            .and_then(|r| {
                r.public_key
                    .ok_or((grpcio::RpcStatusCode::INTERNAL, "empty".into()))
            })
    }

    pub fn get_public_key(&self, id: &str) -> RpcResult<PublicKey> {
        let req = GetPublicKeyRequest { key_id: id.into() };
        self.client
            .unary_call(&GET_PUBLIC_KEY, &req, Self::opt())
            .map_err(err)
            .and_then(|r| {
                r.public_key
                    .ok_or((grpcio::RpcStatusCode::NOT_FOUND, "empty".into()))
            })
    }

    pub fn get_public_keys(&self) -> RpcResult<Vec<PublicKey>> {
        self.client
            .unary_call(&GET_PUBLIC_KEYS, &GetPublicKeysRequest {}, Self::opt())
            .map(|r| r.public_keys)
            .map_err(err)
    }

    pub fn sign(
        &self,
        id: &str,
        data: &[u8],
        opts: Option<SignerOpts>,
    ) -> RpcResult<SignDataResponse> {
        let req = SignDataRequest {
            key_id: id.into(),
            data: data.to_vec(),
            signer_opts: opts,
        };
        self.client
            .unary_call(&SIGN_DATA, &req, Self::opt())
            .map_err(err)
    }

    pub fn deinit(&self) -> RpcResult<()> {
        self.client
            .unary_call(&init::DEINIT, &DeinitRequest {}, Self::opt())
            .map(|_| ())
            .map_err(err)
    }

    /// SPIRE's unload: Deinit, close the broker, Shutdown, then wait for the exit. Returns how
    /// long the process took to exit after Shutdown was answered.
    pub fn unload(&mut self) -> Duration {
        let _ = self.deinit();
        if let Some((mut tx, _rx)) = self.broker.take() {
            let _ = futures_executor::block_on(tx.close());
        }
        let _ = self.client.unary_call(
            &goplugin::CONTROLLER_SHUTDOWN,
            &goplugin::Empty {},
            Self::opt(),
        );
        let start = Instant::now();
        let status = self
            .wait_exit(Duration::from_secs(5))
            .expect("plugin did not exit within 5 s");
        self.exited = Some(status);
        start.elapsed()
    }

    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        azkv_testkit::poll_until(limit, Duration::from_millis(5), || {
            self.child.try_wait().ok().flatten()
        })
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        self.exited = self.child.wait().ok();
    }

    pub fn stderr_lines(&self) -> Vec<String> {
        self.stderr.lock().unwrap().clone()
    }

    pub fn stdout_after_handshake(&self) -> Vec<u8> {
        self.stdout_rest.lock().unwrap().clone()
    }

    /// Waits until a stderr line contains `needle` (background work observed through logs).
    pub fn wait_for_log(&self, needle: &str, limit: Duration) -> bool {
        azkv_testkit::wait_until(limit, Duration::from_millis(10), || {
            self.stderr_lines().iter().any(|l| l.contains(needle))
        })
    }

    /// Every stderr line is an hclog JSON object SPIRE can parse, and none contains a secret.
    pub fn assert_logs_clean(&self, secrets: &[String]) {
        std::thread::sleep(Duration::from_millis(50)); // let the reader thread catch up
        let lines = self.stderr_lines();
        for line in &lines {
            check_hclog_line(line);
            for s in secrets {
                assert!(
                    !s.is_empty() && !line.contains(s.as_str()),
                    "secret leaked in log line: {line}"
                );
            }
        }
        assert!(
            self.stdout_after_handshake().is_empty(),
            "plugin wrote to stdout after the handshake"
        );
    }
}

/// The rules of go-plugin's hclog JSON parser (`logStderr`/`parseJSON`): `@message`, `@level` and
/// `@timestamp` must be strings (a non-string crashes spire-server's log goroutine), the
/// timestamp has exactly six fractional digits, the level is one hclog knows.
pub fn check_hclog_line(line: &str) {
    let v: serde_json::Value =
        serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    let obj = v
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {line}"));
    for key in ["@level", "@message", "@timestamp"] {
        assert!(
            obj.get(key).is_some_and(|x| x.is_string()),
            "{key} missing or not a string: {line}"
        );
    }
    let level = obj["@level"].as_str().unwrap();
    assert!(
        ["trace", "debug", "info", "warn", "error"].contains(&level),
        "bad level: {line}"
    );
    let ts = obj["@timestamp"].as_str().unwrap();
    // Compiled once: every line of every plugin goes through here when a host is dropped.
    static TIMESTAMP: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    let re = TIMESTAMP.get_or_init(|| {
        regex::Regex::new(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}(Z|[+-]\d{2}:\d{2})$")
            .unwrap()
    });
    assert!(re.is_match(ts), "bad timestamp {ts}: {line}");
    for (k, val) in obj {
        assert!(val.is_string(), "field {k} is not a string: {line}");
    }
}

/// Values no log line may ever contain, whatever the test: the fake's client secret and the
/// fixed header every token the fake issues starts with (so any token, whole or cut, is caught).
pub const ALWAYS_SECRET: [&str; 2] = [
    super::fake_azure::FakeAzure::CLIENT_SECRET,
    "eyJ0eXAiOiJKV1QiLCJhbGciOiJub25lIiwia2lkIjoiZmFrZSJ9",
];

impl Drop for PluginProcess {
    fn drop(&mut self) {
        // The shared assertion every integration test passes through: hclog-valid lines, no
        // stdout noise, no secret.
        if !std::thread::panicking() {
            let always: Vec<String> = ALWAYS_SECRET.iter().map(|s| s.to_string()).collect();
            self.assert_logs_clean(&always);
        }
        if self.exited.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
