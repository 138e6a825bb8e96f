//! The client of spire-server's Metrics host service. spire-server serves host services on a
//! socket of its own and announces it on the go-plugin broker stream as the ConnInfo with
//! [`HOST_SERVICES_ID`]; Init lists the services it offers. Once both are known the telemetry
//! registry (src/telemetry.rs) is connected to this client, or told there is no host to send to.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use grpcio::{CallOption, ChannelBuilder, Client, Environment};

use super::proto::goplugin::ConnInfo;
use super::proto::metrics::{self, AddSampleRequest, IncrCounterRequest, Label};
use crate::telemetry::{self, Kind, Metric, Sink, SinkError};

/// The broker id spire-server announces its host services under (the plugin SDK's
/// `HostServiceProviderID`).
pub(crate) const HOST_SERVICES_ID: u32 = 1;
/// One metric's longest wait for the host: the flush thread stops at the first failure and
/// waits out a backoff before trying again, so this bounds what a hung host costs per attempt.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// Sends metrics to the host's Metrics service.
pub(crate) struct MetricsClient {
    env: Arc<Environment>,
    address: String,
    client: Client,
}

impl MetricsClient {
    /// A client for the host socket in `info` (`unix`) on `env`, the plugin server's own
    /// environment: a completion-queue thread of its own would also poll the server's
    /// connections (grpc core shares its pollers), which in examples/bench.rs scenario 7 cost
    /// every signature 10-20 µs of CPU even with no metric sent. The connection is made at the
    /// first call.
    pub(crate) fn new(info: &ConnInfo, env: Arc<Environment>) -> Result<Self, UnsupportedNetwork> {
        if info.network != "unix" {
            return Err(UnsupportedNetwork(info.network.clone()));
        }
        Ok(MetricsClient {
            client: dial(&env, &info.address),
            env,
            address: info.address.clone(),
        })
    }

    fn start(&self, m: &Metric) -> Call {
        let opt = CallOption::default().timeout(CALL_TIMEOUT);
        let (key, val) = (m.full_key(), m.val);
        let labels = (m.labels.iter())
            .map(|(k, v)| Label {
                name: k.to_string(),
                value: v.to_string(),
            })
            .collect();
        match m.kind {
            Kind::Counter => {
                let req = IncrCounterRequest { key, val, labels };
                self.client
                    .unary_call_async(&metrics::INCR_COUNTER, &req, opt)
            }
            Kind::Sample => {
                let req = AddSampleRequest { key, val, labels };
                self.client
                    .unary_call_async(&metrics::ADD_SAMPLE, &req, opt)
            }
        }
    }
}

/// The broker announced host services on another network than a unix socket.
#[derive(Debug, thiserror::Error)]
#[error("host services on network {0:?} are not supported (only unix)")]
pub(crate) struct UnsupportedNetwork(String);

/// A channel to the host-services socket at `address`; it connects at its first call.
fn dial(env: &Arc<Environment>, address: &str) -> Client {
    let channel = ChannelBuilder::new(Arc::clone(env))
        .default_authority("unused")
        .connect(&format!("unix:{address}"));
    Client::new(channel)
}

/// Calls in flight at once in a batch: pipelined on the one connection, so a flush costs a few
/// wake-ups instead of one round trip per metric.
const WINDOW: usize = 64;

type Call = grpcio::Result<grpcio::ClientUnaryReceiver<metrics::Empty>>;

/// Waits for a started call's answer.
fn finish(call: Call) -> Result<(), SinkError> {
    call.and_then(|mut c| c.receive_sync())
        .map(|_| ())
        .map_err(|e| Arc::new(e) as SinkError)
}

impl Sink for MetricsClient {
    fn send_batch(&mut self, batch: &[Metric]) -> Vec<Result<(), SinkError>> {
        let mut out: Vec<Result<(), SinkError>> = Vec::with_capacity(batch.len());
        for window in batch.chunks(WINDOW) {
            // After a failed window the host is in trouble: the rest is not tried (not sent).
            if out.iter().any(Result::is_err) {
                break;
            }
            let calls: Vec<_> = window.iter().map(|m| self.start(m)).collect();
            out.extend(calls.into_iter().map(finish));
        }
        out
    }

    /// A fresh channel to the socket the broker announced: a channel whose calls failed may
    /// hold a broken connection or a long reconnect backoff of its own.
    fn reconnect(&mut self) {
        self.client = dial(&self.env, &self.address);
    }
}

/// What the host told us about its services, from the broker stream and from Init, in
/// whichever order they arrive.
pub(crate) struct HostServices {
    state: Mutex<HostState>,
    env: Arc<Environment>,
}

#[derive(Default)]
struct HostState {
    conn: Option<ConnInfo>,
    /// From Init: whether the Metrics service is among the host's services.
    metrics_offered: Option<bool>,
    decided: bool,
}

impl HostServices {
    /// `env`: the gRPC environment the Metrics client will run on.
    pub(crate) fn new(env: Arc<Environment>) -> Self {
        HostServices {
            state: Mutex::new(HostState::default()),
            env,
        }
    }

    /// A ConnInfo arrived on the broker stream.
    pub(crate) fn conn_info(&self, info: ConnInfo) {
        if info.service_id != HOST_SERVICES_ID {
            return;
        }
        let mut s = self.lock();
        s.conn = Some(info);
        Self::decide(&mut s, &self.env);
    }

    /// Init named the host's services.
    pub(crate) fn host_service_names(&self, names: &[String]) {
        let mut s = self.lock();
        s.metrics_offered = Some(names.iter().any(|n| n == metrics::SERVICE_NAME));
        Self::decide(&mut s, &self.env);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HostState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Connects the telemetry registry once, as soon as what is known allows it.
    fn decide(s: &mut HostState, env: &Arc<Environment>) {
        let client = match (s.decided, s.metrics_offered, &s.conn) {
            (false, Some(false), _) => {
                log::debug!("spire-server offers no Metrics host service; metrics only feed the hourly status line");
                None
            }
            (false, Some(true), Some(info)) => match MetricsClient::new(info, Arc::clone(env)) {
                Ok(client) => {
                    log::debug!(address = info.address.as_str(); "Sending metrics to spire-server's Metrics host service");
                    Some(client)
                }
                Err(e) => {
                    log::warn!(reason:% = e; "Cannot reach spire-server's host services; metrics only feed the hourly status line");
                    None
                }
            },
            // Decided already, or not known yet (offered, but the broker has not announced
            // the socket yet): wait.
            _ => return,
        };
        s.decided = true;
        match client {
            Some(client) => telemetry::global().connect(Box::new(client)),
            None => telemetry::global().disconnect(),
        }
    }
}
