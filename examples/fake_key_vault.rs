//! The in-repo fake Key Vault (tests/support/fake_azure) as a standalone process, for
//! scripts/demo.sh when the lowkey-vault jar cannot be had. Serves the Key Vault keys API over
//! HTTPS (its own test CA) and an App Service style managed-identity endpoint on loopback,
//! prints how to reach them as shell assignments, and runs until SIGTERM/SIGINT or until its
//! parent exits.
//!
//! Commands, one a line on stdin, each answered by one line on stdout (scripts/bench.sh's Go
//! harness, examples/go-bench, drives the fake this way):
//!
//!   latency MS            added to every vault request
//!   limit PER_SEC BURST   sign throttling (429, Retry-After: 1); `limit 0 0` turns it off
//!   stats                 `signs=N throttled=N requests=N connections=N`
//!   reset                 forgets the request log (keeps memory flat over long runs)
//!   insert PREFIX FROM TO [TAG=VALUE ...]
//!                         creates enabled P-256 keys PREFIX<i> for FROM <= i < TO

#[path = "../tests/support"]
#[allow(dead_code, clippy::all)]
mod support_files {
    pub mod fake_azure;
}

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use support_files::fake_azure::{FakeAzure, FakeKeyType, Route};

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
    // Commands are read on their own thread and run here, so the fake stays owned by main
    // and is dropped (CA directory removed) even while stdin is still open.
    let (tx, commands) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // Keep the fake's clock on real time, as Azure's `created`/`updated` are.
    while !STOP.load(Ordering::SeqCst) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        fake.set_now(now);
        if let Ok(line) = commands.recv_timeout(Duration::from_millis(100)) {
            let reply = command(&fake, &line);
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{reply}");
            let _ = out.flush();
        }
    }
    // Dropping the fake stops its listeners and removes its CA directory.
    drop(fake);
}

fn command(fake: &FakeAzure, line: &str) -> String {
    let words: Vec<&str> = line.split_whitespace().collect();
    let num = |i: usize| words.get(i).and_then(|w| w.parse::<f64>().ok());
    match (words.first().copied(), num(1), num(2)) {
        (Some("latency"), Some(ms), _) if ms.is_finite() && ms >= 0.0 => {
            fake.set_latency(Duration::from_secs_f64(ms / 1000.0));
            "ok".into()
        }
        (Some("limit"), Some(rate), Some(burst)) if rate.is_finite() && burst.is_finite() => {
            fake.limit_signs(rate, burst);
            "ok".into()
        }
        (Some("stats"), _, _) => format!(
            "ok signs={} throttled={} requests={} connections={}",
            fake.count(Route::Sign),
            fake.throttled_signs(),
            fake.count(Route::Any),
            fake.connections_accepted()
        ),
        (Some("reset"), _, _) => {
            fake.reset_log();
            "ok".into()
        }
        (Some("insert"), _, _) if words.len() >= 4 => {
            let (Ok(from), Ok(to)) = (words[2].parse::<u64>(), words[3].parse::<u64>()) else {
                return format!("error: bad range in {line:?}");
            };
            let tags: Vec<(&str, &str)> = words[4..]
                .iter()
                .filter_map(|t| t.split_once('='))
                .collect();
            let now = fake.now();
            for i in from..to {
                let name = format!("{}{i}", words[1]);
                fake.insert_key(&name, FakeKeyType::EcP256, &tags, now, now, true);
            }
            "ok".into()
        }
        _ => format!("error: unknown command {line:?}"),
    }
}
