//! The in-repo fake Key Vault (tests/support/fake_azure) as a standalone process, for
//! scripts/demo.sh when the lowkey-vault jar cannot be had. Serves the Key Vault keys API over
//! HTTPS (its own test CA) and an App Service style managed-identity endpoint on loopback,
//! prints how to reach them as shell assignments, and runs until SIGTERM/SIGINT or until its
//! parent exits.

#[path = "../tests/support"]
#[allow(dead_code, clippy::all)]
mod support_files {
    pub mod fake_azure;
}

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use support_files::fake_azure::FakeAzure;

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn main() {
    // SAFETY: the handler only stores to an atomic; prctl has no memory effects here.
    unsafe {
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
    }
    let fake = FakeAzure::start();
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "VAULT_KIND=fake");
    let _ = writeln!(out, "VAULT_URI={}", fake.vault_uri());
    let _ = writeln!(out, "VAULT_CA_FILE={}", fake.ca_pem_path().display());
    let _ = writeln!(out, "IDENTITY_ENDPOINT={}", fake.identity_endpoint());
    let _ = writeln!(out, "IDENTITY_HEADER={}", fake.identity_header());
    let _ = out.flush();
    drop(out);
    // Keep the fake's clock on real time, as Azure's `created`/`updated` are.
    while !STOP.load(Ordering::SeqCst) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        fake.set_now(now);
        std::thread::sleep(Duration::from_millis(100));
    }
    // Dropping the fake stops its listeners and removes its CA directory.
    drop(fake);
}
