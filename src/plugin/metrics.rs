//! The client of spire-server's Metrics host service. spire-server serves host services on a
//! socket of its own and announces it on the go-plugin broker stream as the ConnInfo with
//! [`HOST_SERVICES_ID`]; Init lists the services it offers. Once both are known the telemetry
//! registry (src/telemetry.rs) is connected to this client, or told there is no host to send to.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use grpcio::{CallOption, ChannelBuilder, Client, EnvBuilder, Environment};

use super::proto::goplugin::ConnInfo;
use super::proto::metrics::{self, AddSampleRequest, IncrCounterRequest, Label};
use crate::telemetry::{self, Kind, Metric, Sink, SinkError};

/// The broker id spire-server announces its host services under (the plugin SDK's
/// `HostServiceProviderID`).
pub const HOST_SERVICES_ID: u32 = 1;
/// One metric's longest wait for the host: the drain thread gives up on the host after one
/// failure, so this bounds what a dead host costs.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// Sends metrics to the host's Metrics service.
pub struct MetricsClient {
    _env: Arc<Environment>,
    client: Client,
}

impl MetricsClient {
    /// A client for the host socket in `info` (`unix`). The connection is made at the first call.
    pub fn new(info: &ConnInfo) -> Result<Self, UnsupportedNetwork> {
        if info.network != "unix" {
            return Err(UnsupportedNetwork(info.network.clone()));
        }
        let env = Arc::new(
            EnvBuilder::new()
                .cq_count(1)
                .name_prefix("host-metrics")
                .build(),
        );
        let channel = ChannelBuilder::new(Arc::clone(&env))
            .default_authority("unused")
            .connect(&format!("unix:{}", info.address));
        Ok(MetricsClient {
            _env: env,
            client: Client::new(channel),
        })
    }
}

fn labels(m: &Metric) -> Vec<Label> {
    m.labels
        .iter()
        .map(|(k, v)| Label {
            name: k.to_string(),
            value: v.to_string(),
        })
        .collect()
}

impl Sink for MetricsClient {
    fn send(&mut self, m: &Metric) -> Result<(), SinkError> {
        let opt = || CallOption::default().timeout(CALL_TIMEOUT);
        let result = match m.kind {
            Kind::Counter => {
                let req = IncrCounterRequest {
                    key: m.full_key(),
                    val: m.val,
                    labels: labels(m),
                };
                self.client
                    .unary_call(&metrics::INCR_COUNTER, &req, opt())
                    .map(|_| ())
            }
            Kind::Sample => {
                let req = AddSampleRequest {
                    key: m.full_key(),
                    val: m.val,
                    labels: labels(m),
                };
                self.client
                    .unary_call(&metrics::ADD_SAMPLE, &req, opt())
                    .map(|_| ())
            }
        };
        Ok(result?)
    }
}

/// The broker announced host services on another network than a unix socket.
#[derive(Debug)]
pub struct UnsupportedNetwork(String);

impl std::fmt::Display for UnsupportedNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let network = &self.0;
        write!(
            f,
            "host services on network {network:?} are not supported (only unix)"
        )
    }
}

/// What the host told us about its services, from the broker stream and from Init, in
/// whichever order they arrive.
#[derive(Default)]
pub struct HostServices {
    state: Mutex<HostState>,
}

#[derive(Default)]
struct HostState {
    conn: Option<ConnInfo>,
    /// From Init: whether the Metrics service is among the host's services.
    metrics_offered: Option<bool>,
    decided: bool,
}

impl HostServices {
    /// A ConnInfo arrived on the broker stream.
    pub fn conn_info(&self, info: ConnInfo) {
        if info.service_id != HOST_SERVICES_ID {
            return;
        }
        let mut s = self.lock();
        s.conn = Some(info);
        Self::decide(&mut s);
    }

    /// Init named the host's services.
    pub fn host_service_names(&self, names: &[String]) {
        let mut s = self.lock();
        s.metrics_offered = Some(names.iter().any(|n| n == metrics::SERVICE_NAME));
        Self::decide(&mut s);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HostState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Connects the telemetry registry once, as soon as what is known allows it.
    fn decide(s: &mut HostState) {
        if s.decided {
            return;
        }
        match (s.metrics_offered, &s.conn) {
            (Some(false), _) => {
                s.decided = true;
                log::debug!("spire-server offers no Metrics host service; metrics only feed the hourly status line");
                telemetry::global().disconnect();
            }
            (Some(true), Some(info)) => {
                s.decided = true;
                match MetricsClient::new(info) {
                    Ok(client) => {
                        log::debug!(address = info.address.as_str(); "Sending metrics to spire-server's Metrics host service");
                        telemetry::global().connect(Box::new(client));
                    }
                    Err(e) => {
                        log::warn!(reason:% = e; "Cannot reach spire-server's host services; metrics only feed the hourly status line");
                        telemetry::global().disconnect();
                    }
                }
            }
            // Offered, but the broker has not announced the socket yet: wait for it.
            _ => {}
        }
    }
}
