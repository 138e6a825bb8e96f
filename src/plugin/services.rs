//! gRPC service handlers. Argument checks happen here with the reference's messages; the work is
//! delegated to `PluginCore`. Calls that may reach Key Vault run on the worker pool so the
//! completion-queue threads never block.

use std::sync::Arc;

use crossbeam_channel::Sender;
use futures_util::{FutureExt, SinkExt, StreamExt};
use grpcio::{
    DuplexSink, RequestStream, RpcContext, RpcStatus, RpcStatusCode, ServerStreamingSink, Service,
    ServiceBuilder, UnarySink, WriteFlags,
};

use super::metrics::HostServices;
use super::pool::WorkerPool;
use super::proto::{config, goplugin, health, init, keymanager};
use super::{PluginCore, SignerOpts as CoreSignerOpts};
use crate::error::{Code, PluginError};

/// Why the process should exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    ControllerShutdown,
    /// SIGTERM: leave after a grace period unless the host unloads us first.
    Terminated,
    /// spire-server is gone (we were re-parented).
    HostGone,
}

pub struct Services {
    core: Arc<dyn PluginCore>,
    host: Arc<HostServices>,
    pool: Arc<WorkerPool>,
    stop: Sender<StopReason>,
}

fn to_status(e: PluginError) -> RpcStatus {
    let code = match e.code {
        Code::InvalidArgument => RpcStatusCode::INVALID_ARGUMENT,
        Code::NotFound => RpcStatusCode::NOT_FOUND,
        Code::FailedPrecondition => RpcStatusCode::FAILED_PRECONDITION,
        Code::Aborted => RpcStatusCode::ABORTED,
        Code::Unavailable => RpcStatusCode::UNAVAILABLE,
        Code::Internal => RpcStatusCode::INTERNAL,
    };
    RpcStatus::with_message(code, e.message)
}

/// Completes a unary call with `result`, logging (at debug) a client that went away.
fn reply<T: Send + 'static>(
    ctx: &RpcContext<'_>,
    sink: UnarySink<T>,
    result: Result<T, PluginError>,
) {
    let f = match result {
        Ok(resp) => sink.success(resp),
        Err(e) => sink.fail(to_status(e)),
    };
    ctx.spawn(f.map(|r| {
        if let Err(e) = r {
            log::debug!(error = e.to_string(); "RPC reply not delivered");
        }
    }));
}

impl Services {
    /// `env`: the server's gRPC environment, which the Metrics host-service client shares.
    pub fn new(
        core: Arc<dyn PluginCore>,
        pool: Arc<WorkerPool>,
        stop: Sender<StopReason>,
        env: Arc<grpcio::Environment>,
    ) -> Self {
        Services {
            core,
            host: Arc::new(HostServices::new(env)),
            pool,
            stop,
        }
    }

    /// Runs `work` on the worker pool and completes the call with its result. The worker starts
    /// the reply itself, so the answer leaves without first waking a completion-queue thread
    /// (one thread wake-up less on every signature's path); the cq thread only keeps the call
    /// alive until gRPC reports the reply sent (dropping it earlier would cancel the call).
    fn offload<T, F>(&self, ctx: &RpcContext<'_>, sink: UnarySink<T>, work: F)
    where
        T: Send + 'static,
        F: FnOnce() -> Result<T, PluginError> + Send + 'static,
    {
        let (tx, rx) = futures_channel::oneshot::channel();
        self.pool.execute(move || {
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work))
                .unwrap_or_else(|_| {
                    Err(PluginError::internal(
                        "worker thread ended without a result",
                    ))
                });
            let sent = match result {
                Ok(resp) => sink.success(resp),
                Err(e) => sink.fail(to_status(e)),
            };
            let _ = tx.send(sent);
        });
        ctx.spawn(async move {
            // An Err here means the job never ran: the sink was dropped, which cancels the call.
            if let Ok(sent) = rx.await {
                if let Err(e) = sent.await {
                    log::debug!(error = e.to_string(); "RPC reply not delivered");
                }
            }
        });
    }

    /// Every service the plugin serves, ready to register on a grpcio server.
    pub fn build(self) -> Vec<Service> {
        let this = Arc::new(self);
        vec![
            go_plugin_services(Arc::clone(&this)),
            health_service(),
            init_service(Arc::clone(&this)),
            config_service(Arc::clone(&this)),
            keymanager_service(this),
        ]
    }
}

fn go_plugin_services(this: Arc<Services>) -> Service {
    let stop = this.stop.clone();
    let core = Arc::clone(&this.core);
    let host = Arc::clone(&this.host);
    ServiceBuilder::new()
        .add_duplex_streaming_handler(
            &goplugin::BROKER_START_STREAM,
            move |ctx: RpcContext<'_>,
                  mut stream: RequestStream<goplugin::ConnInfo>,
                  sink: DuplexSink<goplugin::ConnInfo>| {
                // SPIRE announces its host-services socket here (src/plugin/metrics.rs). The
                // stream stays open until the host ends it.
                let host = Arc::clone(&host);
                ctx.spawn(async move {
                    let _sink = sink;
                    while let Some(msg) = stream.next().await {
                        match msg {
                            Ok(info) => {
                                log::debug!(
                                    service_id = info.service_id.to_string(),
                                    network = info.network.as_str();
                                    "Broker connection info received"
                                );
                                host.conn_info(info);
                            }
                            Err(_) => break,
                        }
                    }
                });
            },
        )
        .add_server_streaming_handler(
            &goplugin::STDIO_STREAM,
            |ctx: RpcContext<'_>,
             _req: goplugin::Empty,
             sink: ServerStreamingSink<goplugin::StdioData>| {
                // Open and idle: logs go to stderr, which SPIRE reads directly.
                ctx.spawn(async move {
                    let _sink = sink;
                    futures_util::future::pending::<()>().await
                });
            },
        )
        .add_unary_handler(
            &goplugin::CONTROLLER_SHUTDOWN,
            move |ctx: RpcContext<'_>, _req: goplugin::Empty, sink: UnarySink<goplugin::Empty>| {
                log::debug!("Shutdown requested by the host");
                core.deinit();
                let stop = stop.clone();
                // Exit only once the answer is on the wire.
                ctx.spawn(sink.success(goplugin::Empty {}).map(move |_| {
                    let _ = stop.send(StopReason::ControllerShutdown);
                }));
            },
        )
        .build()
}

fn health_service() -> Service {
    let status_for = |service: &str| {
        if service.is_empty() || service == "plugin" {
            health::SERVING
        } else {
            health::SERVICE_UNKNOWN
        }
    };
    ServiceBuilder::new()
        .add_unary_handler(
            &health::CHECK,
            move |ctx: RpcContext<'_>, req: health::HealthCheckRequest, sink| {
                let status = status_for(&req.service);
                reply(&ctx, sink, Ok(health::HealthCheckResponse { status }));
            },
        )
        .add_server_streaming_handler(
            &health::WATCH,
            move |ctx: RpcContext<'_>,
                  req: health::HealthCheckRequest,
                  mut sink: ServerStreamingSink<health::HealthCheckResponse>| {
                let status = status_for(&req.service);
                ctx.spawn(async move {
                    let _ = sink
                        .send((
                            health::HealthCheckResponse { status },
                            WriteFlags::default(),
                        ))
                        .await;
                    futures_util::future::pending::<()>().await
                });
            },
        )
        .build()
}

fn init_service(this: Arc<Services>) -> Service {
    let core = Arc::clone(&this.core);
    let host = Arc::clone(&this.host);
    ServiceBuilder::new()
        .add_unary_handler(
            &init::INIT,
            move |ctx: RpcContext<'_>, req: init::InitRequest, sink| {
                log::debug!(host_services = req.host_service_names.join(","); "Init");
                host.host_service_names(&req.host_service_names);
                let resp = init::InitResponse {
                    plugin_service_names: vec![
                        keymanager::SERVICE_NAME.to_string(),
                        config::SERVICE_NAME.to_string(),
                    ],
                };
                reply(&ctx, sink, Ok(resp));
            },
        )
        .add_unary_handler(
            &init::DEINIT,
            move |ctx: RpcContext<'_>, _req: init::DeinitRequest, sink| {
                log::debug!("Deinit");
                core.deinit();
                reply(&ctx, sink, Ok(init::DeinitResponse {}));
            },
        )
        .build()
}

fn config_service(this: Arc<Services>) -> Service {
    let configure = Arc::clone(&this);
    let validate = this;
    ServiceBuilder::new()
        .add_unary_handler(
            &config::CONFIGURE,
            move |ctx: RpcContext<'_>, req: config::ConfigureRequest, sink| {
                let core = Arc::clone(&configure.core);
                configure.offload(&ctx, sink, move || {
                    core.configure(req.core_configuration.as_ref(), &req.hcl_configuration)
                        .map(|()| config::ConfigureResponse {})
                });
            },
        )
        .add_unary_handler(
            &config::VALIDATE,
            move |ctx: RpcContext<'_>, req: config::ValidateRequest, sink| {
                let core = Arc::clone(&validate.core);
                validate.offload(&ctx, sink, move || {
                    let (valid, notes) =
                        core.validate(req.core_configuration.as_ref(), &req.hcl_configuration);
                    Ok(config::ValidateResponse { valid, notes })
                });
            },
        )
        .build()
}

fn keymanager_service(this: Arc<Services>) -> Service {
    use keymanager::*;
    let gen = Arc::clone(&this);
    let get = Arc::clone(&this);
    let get_all = Arc::clone(&this);
    let sign = this;
    ServiceBuilder::new()
        .add_unary_handler(
            &GENERATE_KEY,
            move |ctx: RpcContext<'_>, req: GenerateKeyRequest, sink| {
                let key_type =
                    KeyType::from_i32(req.key_type).unwrap_or(KeyType::UnspecifiedKeyType);
                if req.key_id.is_empty() {
                    return reply(
                        &ctx,
                        sink,
                        Err(PluginError::invalid_argument("key id is required")),
                    );
                }
                if key_type == KeyType::UnspecifiedKeyType {
                    return reply(
                        &ctx,
                        sink,
                        Err(PluginError::invalid_argument("key type is required")),
                    );
                }
                let core = Arc::clone(&gen.core);
                gen.offload(&ctx, sink, move || {
                    core.generate_key(&req.key_id, key_type)
                        .map(|k| GenerateKeyResponse {
                            public_key: Some(k),
                        })
                });
            },
        )
        .add_unary_handler(
            &GET_PUBLIC_KEY,
            move |ctx: RpcContext<'_>, req: GetPublicKeyRequest, sink| {
                // Served from memory: no reason to leave the completion-queue thread.
                let result = if req.key_id.is_empty() {
                    Err(PluginError::invalid_argument("key id is required"))
                } else {
                    get.core
                        .get_public_key(&req.key_id)
                        .map(|k| GetPublicKeyResponse {
                            public_key: Some(k),
                        })
                };
                reply(&ctx, sink, result);
            },
        )
        .add_unary_handler(
            &GET_PUBLIC_KEYS,
            move |ctx: RpcContext<'_>, _req: GetPublicKeysRequest, sink| {
                let result = get_all
                    .core
                    .get_public_keys()
                    .map(|public_keys| GetPublicKeysResponse { public_keys });
                reply(&ctx, sink, result);
            },
        )
        .add_unary_handler(
            &SIGN_DATA,
            move |ctx: RpcContext<'_>, req: SignDataRequest, sink| {
                if req.key_id.is_empty() {
                    return reply(
                        &ctx,
                        sink,
                        Err(PluginError::invalid_argument("key id is required")),
                    );
                }
                let hash = |v: i32| {
                    HashAlgorithm::from_i32(v).unwrap_or(HashAlgorithm::UnspecifiedHashAlgorithm)
                };
                let opts = match &req.signer_opts {
                    None => {
                        return reply(
                            &ctx,
                            sink,
                            Err(PluginError::invalid_argument("signer opts is required")),
                        )
                    }
                    Some(keymanager::SignerOpts::HashAlgorithm(h)) => {
                        CoreSignerOpts::Hash(hash(*h))
                    }
                    Some(keymanager::SignerOpts::PssOptions(p)) => CoreSignerOpts::Pss {
                        hash: hash(p.hash_algorithm),
                        salt_length: p.salt_length,
                    },
                };
                let core = Arc::clone(&sign.core);
                sign.offload(&ctx, sink, move || {
                    core.sign_data(&req.key_id, &req.data, opts)
                        .map(|s| SignDataResponse {
                            signature: s.signature,
                            key_fingerprint: s.key_fingerprint,
                        })
                });
            },
        )
        .build()
}
