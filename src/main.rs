//! `azure_key_vault`: launched by spire-server through `plugin_cmd`.

use std::sync::Arc;

use azkv::plugin::handshake::{cookie_ok, COOKIE_KEY, NOT_A_PROGRAM};
use azkv::plugin::server::{prepare_signals, serve};

fn main() {
    if !cookie_ok(std::env::var(COOKIE_KEY).ok().as_deref()) {
        eprintln!("{NOT_A_PROGRAM}");
        std::process::exit(1);
    }
    let signals = prepare_signals();
    azkv::log::init();
    // gRPC core writes its own text diagnostics to stderr otherwise; route them through `log`.
    grpcio::redirect_log();
    // A panic message must reach spire-server's log as an hclog line, not as bare stderr text.
    std::panic::set_hook(Box::new(|info| {
        let thread = std::thread::current()
            .name()
            .unwrap_or("unnamed")
            .to_string();
        log::error!(thread = thread, panic = info.to_string(); "Plugin thread panicked");
    }));
    let core = Arc::new(azkv::keys::KeyManager::new_default());
    let code = serve(core, signals);
    // Skip destructors: grpcio's threads and pending streams must not delay the exit.
    std::process::exit(code);
}
