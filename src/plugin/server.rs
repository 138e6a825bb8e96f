//! Runs the plugin: socket, grpcio server, handshake line, then waits for the host to unload it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use grpcio::{EnvBuilder, ServerBuilder, ServerCredentials};

use super::handshake::{announce, SocketDir};
use super::pool::WorkerPool;
use super::services::{Services, StopReason};
use super::PluginCore;
pub(crate) use crate::sys::SignalSet;

/// Most blocking RPCs in flight at once (SignData fan-out from a busy SPIRE server).
const MAX_WORKERS: usize = 64;
/// How long a SIGTERM waits for the host's orderly Deinit/Shutdown before exiting anyway.
const TERM_GRACE: Duration = Duration::from_secs(5);

/// Blocks SIGTERM in the calling thread (and so in every thread started later) and ignores
/// SIGINT. Call first thing in `main`, before any thread exists.
pub fn prepare_signals() -> SignalSet {
    // Ctrl-C reaches the whole process group; the host unloads us in order instead.
    crate::sys::ignore_sigint_and_block_sigterm()
}

fn spawn_signal_thread(set: SignalSet, stop: Sender<StopReason>) {
    let _ = std::thread::Builder::new()
        .name("azkv-signals".into())
        .spawn(move || loop {
            if set.wait_for_sigterm() {
                let _ = stop.send(StopReason::Terminated);
            }
        });
}

fn spawn_parent_watch(stop: Sender<StopReason>) {
    let parent = crate::sys::parent_pid();
    let _ = std::thread::Builder::new()
        .name("azkv-parent-watch".into())
        .spawn(move || loop {
            std::thread::sleep(Duration::from_millis(500));
            if crate::sys::parent_pid() != parent {
                let _ = stop.send(StopReason::HostGone);
                return;
            }
        });
}

/// Serves until the host unloads the plugin. Returns the process exit code.
pub fn serve(core: Arc<dyn PluginCore>, signals: SignalSet) -> i32 {
    let base = std::env::var_os("PLUGIN_UNIX_SOCKET_DIR")
        .filter(|v| !v.is_empty())
        .map(std::path::PathBuf::from);
    let socket = match SocketDir::create(base.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            log::error!(error = e.to_string(); "Could not create the plugin socket directory");
            return 1;
        }
    };

    let (stop_tx, stop_rx) = crossbeam_channel::unbounded();
    let pool = Arc::new(WorkerPool::new(MAX_WORKERS));
    // One completion-queue thread: handlers never block (network work goes to the worker
    // pool), and with two, events were handed between the two pollers, which cost CPU on every
    // call (README "Benchmarks", "This plugin alone").
    let env = Arc::new(
        EnvBuilder::new()
            .cq_count(1)
            .name_prefix("azkv-grpc")
            .build(),
    );
    // The Metrics client shares this completion-queue thread: a second one would also poll the
    // server's connections (src/plugin/metrics.rs).
    let services = Services::new(Arc::clone(&core), pool, stop_tx.clone(), Arc::clone(&env));
    let builder = ServerBuilder::new(env).register_service(services.build());
    let mut server = match builder.build() {
        Ok(s) => s,
        Err(e) => {
            log::error!(error = e.to_string(); "Could not build the gRPC server");
            return 1;
        }
    };
    let addr = format!("unix:{}", socket.socket_path().display());
    if let Err(e) = server.add_listening_port(addr, ServerCredentials::insecure()) {
        log::error!(error = e.to_string(); "Could not listen on the plugin socket");
        return 1;
    }
    if let Some(group) = std::env::var("PLUGIN_UNIX_SOCKET_GROUP")
        .ok()
        .filter(|g| !g.is_empty())
    {
        // go-plugin fails the start when the group cannot be applied; so do we.
        if let Err(e) = socket.share_with_group(&group) {
            log::error!(error = e.to_string(); "Could not give the plugin socket to PLUGIN_UNIX_SOCKET_GROUP");
            return 1;
        }
    }
    server.start();

    spawn_signal_thread(signals, stop_tx.clone());
    spawn_parent_watch(stop_tx);

    // Only now may the host dial.
    if let Err(e) = announce(socket.socket_path()) {
        log::error!(error = e.to_string(); "Could not write the handshake line");
        return 1;
    }
    log::debug!(socket = socket.socket_path().display().to_string(); "Plugin listening");

    let reason = wait_for_stop(&stop_rx);
    log::debug!(reason = format!("{reason:?}"); "Plugin stopping");
    core.deinit();
    // Not awaited: the process exits right after; cancelling the calls ends the held streams.
    drop(server.shutdown());
    server.cancel_all_calls();
    socket.remove();
    0
}

fn wait_for_stop(stop: &Receiver<StopReason>) -> StopReason {
    let mut deadline: Option<Instant> = None;
    loop {
        let msg = match deadline {
            None => stop.recv().map_err(|_| RecvTimeoutError::Disconnected),
            Some(d) => stop.recv_timeout(d.saturating_duration_since(Instant::now())),
        };
        match msg {
            Ok(StopReason::Terminated) => {
                if deadline.is_none() {
                    log::info!(
                        "SIGTERM received; waiting briefly for spire-server to unload the plugin"
                    );
                    deadline = Some(Instant::now() + TERM_GRACE);
                }
            }
            Ok(reason) => return reason,
            Err(_) => return StopReason::Terminated,
        }
    }
}
