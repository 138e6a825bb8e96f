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
pub(crate) enum StopReason {
    ControllerShutdown,
    /// SIGTERM: leave after a grace period unless the host unloads us first.
    Terminated,
    /// spire-server is gone (we were re-parented).
    HostGone,
}

pub(crate) struct Services {
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
    pub(crate) fn new(
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
        F: FnOnce(&dyn PluginCore) -> Result<T, PluginError> + Send + 'static,
    {
        let (tx, rx) = futures_channel::oneshot::channel();
        let core = Arc::clone(&self.core);
        self.pool.execute(move || {
            let work = std::panic::AssertUnwindSafe(|| work(core.as_ref()));
            let result = std::panic::catch_unwind(work).unwrap_or_else(|_| {
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

    /// Every method the plugin serves (go-plugin's services, health, Init, Config, KeyManager)
    /// in one grpcio `Service`, which is only a map from method path to handler.
    pub(crate) fn build(self) -> Service {
        let this = Arc::new(self);
        let b = go_plugin_services(ServiceBuilder::new(), &this);
        let b = health_service(b);
        let b = init_and_config_services(b, &this);
        keymanager_service(b, this).build()
    }
}

/// `InvalidArgument` with `message` unless `ok`.
fn require(ok: bool, message: &'static str) -> Result<(), PluginError> {
    match ok {
        true => Ok(()),
        false => Err(PluginError::invalid_argument(message)),
    }
}

fn go_plugin_services(b: ServiceBuilder, this: &Services) -> ServiceBuilder {
    let stop = this.stop.clone();
    let core = Arc::clone(&this.core);
    let host = Arc::clone(&this.host);
    b.add_duplex_streaming_handler(
        &goplugin::BROKER_START_STREAM,
        move |ctx: RpcContext<'_>,
              mut stream: RequestStream<goplugin::ConnInfo>,
              sink: DuplexSink<goplugin::ConnInfo>| {
            // SPIRE announces its host-services socket here (src/plugin/metrics.rs). The
            // stream stays open until the host ends it.
            let host = Arc::clone(&host);
            ctx.spawn(async move {
                let _sink = sink;
                while let Some(Ok(info)) = stream.next().await {
                    log::debug!(
                        service_id = info.service_id.to_string(),
                        network = info.network.as_str();
                        "Broker connection info received"
                    );
                    host.conn_info(info);
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
}

fn health_service(b: ServiceBuilder) -> ServiceBuilder {
    let status_for = |service: &str| {
        if service.is_empty() || service == "plugin" {
            health::SERVING
        } else {
            health::SERVICE_UNKNOWN
        }
    };
    b.add_unary_handler(
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
                let response = health::HealthCheckResponse { status };
                let _ = sink.send((response, WriteFlags::default())).await;
                futures_util::future::pending::<()>().await
            });
        },
    )
}

fn init_and_config_services(b: ServiceBuilder, this: &Arc<Services>) -> ServiceBuilder {
    let (core, host) = (Arc::clone(&this.core), Arc::clone(&this.host));
    let (configure, validate) = (Arc::clone(this), Arc::clone(this));
    b.add_unary_handler(
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
    .add_unary_handler(
        &config::CONFIGURE,
        move |ctx: RpcContext<'_>, req: config::ConfigureRequest, sink| {
            configure.offload(&ctx, sink, move |core| {
                core.configure(req.core_configuration.as_ref(), &req.hcl_configuration)
                    .map(|()| config::ConfigureResponse {})
            });
        },
    )
    .add_unary_handler(
        &config::VALIDATE,
        move |ctx: RpcContext<'_>, req: config::ValidateRequest, sink| {
            validate.offload(&ctx, sink, move |core| {
                let (valid, notes) =
                    core.validate(req.core_configuration.as_ref(), &req.hcl_configuration);
                Ok(config::ValidateResponse { valid, notes })
            });
        },
    )
}

fn keymanager_service(b: ServiceBuilder, this: Arc<Services>) -> ServiceBuilder {
    use keymanager::*;
    let (get, get_all) = (Arc::clone(&this.core), Arc::clone(&this.core));
    let (gen, sign) = (Arc::clone(&this), this);
    b.add_unary_handler(
        &GENERATE_KEY,
        move |ctx: RpcContext<'_>, req: GenerateKeyRequest, sink| {
            let key_type = KeyType::from_i32(req.key_type).unwrap_or(KeyType::UnspecifiedKeyType);
            let checked = require(!req.key_id.is_empty(), "key id is required").and(require(
                key_type != KeyType::UnspecifiedKeyType,
                "key type is required",
            ));
            if let Err(e) = checked {
                return reply(&ctx, sink, Err(e));
            }
            gen.offload(&ctx, sink, move |core| {
                let public_key = Some(core.generate_key(&req.key_id, key_type)?);
                Ok(GenerateKeyResponse { public_key })
            });
        },
    )
    .add_unary_handler(
        &GET_PUBLIC_KEY,
        move |ctx: RpcContext<'_>, req: GetPublicKeyRequest, sink| {
            // Served from memory: no reason to leave the completion-queue thread.
            let result = require(!req.key_id.is_empty(), "key id is required")
                .and_then(|()| get.get_public_key(&req.key_id))
                .map(|k| GetPublicKeyResponse {
                    public_key: Some(k),
                });
            reply(&ctx, sink, result);
        },
    )
    .add_unary_handler(
        &GET_PUBLIC_KEYS,
        move |ctx: RpcContext<'_>, _req: GetPublicKeysRequest, sink| {
            let result = get_all.get_public_keys();
            reply(
                &ctx,
                sink,
                result.map(|public_keys| GetPublicKeysResponse { public_keys }),
            );
        },
    )
    .add_unary_handler(
        &SIGN_DATA,
        move |ctx: RpcContext<'_>, req: SignDataRequest, sink| {
            let hash = |v: i32| {
                HashAlgorithm::from_i32(v).unwrap_or(HashAlgorithm::UnspecifiedHashAlgorithm)
            };
            let opts = match &req.signer_opts {
                None => Err(PluginError::invalid_argument("signer opts is required")),
                Some(keymanager::SignerOpts::HashAlgorithm(h)) => {
                    Ok(CoreSignerOpts::Hash(hash(*h)))
                }
                Some(keymanager::SignerOpts::PssOptions(p)) => Ok(CoreSignerOpts::Pss {
                    hash: hash(p.hash_algorithm),
                    salt_length: p.salt_length,
                }),
            };
            let opts = match require(!req.key_id.is_empty(), "key id is required").and(opts) {
                Ok(opts) => opts,
                Err(e) => return reply(&ctx, sink, Err(e)),
            };
            sign.offload(&ctx, sink, move |core| {
                let s = core.sign_data(&req.key_id, &req.data, opts)?;
                Ok(SignDataResponse {
                    signature: s.signature,
                    key_fingerprint: s.key_fingerprint,
                })
            });
        },
    )
}
