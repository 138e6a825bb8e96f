//! The shipped binary: a fully static x86_64 executable (glibc with crt-static) that starts and
//! completes the go-plugin handshake. Uses `AZKV_RELEASE_BIN` when set (scripts/test-all.sh
//! builds it first), otherwise builds it with scripts/build-release.sh.

mod support;

use std::process::Command;

use support::plugin_host::PluginProcess;
use support::release::release_binary;

#[test]
fn release_binary_is_static_and_completes_the_handshake() {
    let bin = release_binary();
    assert!(bin.is_file(), "{bin:?} missing");

    // No program interpreter and no shared libraries: the ELF has no PT_INTERP / DT_NEEDED.
    let ldd = Command::new("ldd").arg(&bin).output().expect("ldd");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&ldd.stdout),
        String::from_utf8_lossy(&ldd.stderr)
    );
    assert!(
        text.contains("statically linked") || text.contains("not a dynamic executable"),
        "ldd reports dynamic dependencies:\n{text}"
    );
    let elf = std::fs::read(&bin).unwrap();
    assert!(
        !contains(&elf, b"/lib64/ld-linux-x86-64.so.2"),
        "binary names the dynamic loader"
    );

    let mut p = PluginProcess::launch_bin(&bin, &[]);
    assert!(p.handshake.starts_with("1|1|unix|"), "{}", p.handshake);
    assert_eq!(p.init().unwrap().len(), 2);
    let took = p.unload();
    assert!(
        took < std::time::Duration::from_secs(2),
        "exit took {took:?}"
    );
    p.assert_logs_clean(&[]);
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The static binary still resolves host names (glibc's NSS `files` source: `localhost` from
/// /etc/hosts) and talks TLS to a vault addressed by name.
#[test]
fn release_binary_resolves_names_and_signs() {
    use azkv::proto::keymanager::{HashAlgorithm, KeyType, SignerOpts};
    use support::env::plugin_env;
    use support::fake_azure::FakeAzure;

    let bin = release_binary();
    let fake = FakeAzure::start();
    let port = fake.https_addr().port();
    let env = plugin_env(
        &fake,
        &[(
            "AZURE_AUTHORITY_HOST",
            &format!("https://localhost:{port}/"),
        )],
    );
    let refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let p = PluginProcess::launch_bin(&bin, &refs);
    p.init().unwrap();
    let hcl = support::env::standard_hcl(&fake, "static-test")
        .replace(&fake.vault_uri(), &format!("https://localhost:{port}/"));
    p.configure("example.org", &hcl)
        .expect("configure by host name");
    let pk = p.generate_key("x509-CA-A", KeyType::EcP256).unwrap();
    let d = support::verify::digest(HashAlgorithm::Sha256, b"static");
    let s = p
        .sign(
            "x509-CA-A",
            &d,
            Some(SignerOpts::HashAlgorithm(HashAlgorithm::Sha256 as i32)),
        )
        .unwrap();
    support::verify::verify(
        &pk.pkix_data,
        HashAlgorithm::Sha256,
        false,
        &d,
        &s.signature,
    );
}

/// The schedule and endpoint knobs the tests use exist only in test builds: the shipped binary
/// holds none of their names, and a shortened schedule in its environment changes nothing (with
/// it honoured, the first sweep 100 ms after Configure would delete the other server's key).
#[test]
fn release_binary_ignores_test_hooks() {
    use support::env::{plugin_env, standard_hcl, TD};
    use support::fake_azure::{FakeAzure, FakeKeyType, Route};

    let bin = release_binary();
    let elf = std::fs::read(&bin).unwrap();
    for hook in [
        "AZKV_TEST_MAINTENANCE",
        "AZKV_TEST_SHARED",
        "AZKV_TEST_STATUS_INTERVAL",
        "AZKV_TEST_METRICS_FLUSH",
        "AZURE_IMDS_ENDPOINT",
    ] {
        assert!(
            !contains(&elf, hook.as_bytes()),
            "the release binary still reads {hook}"
        );
    }

    let fake = FakeAzure::start();
    let hour_ago = fake.now() - 3600.0;
    let other = "spire-key-00000000-0000-4000-8000-0000000000aa-x509-CA-A";
    fake.insert_key(
        other,
        FakeKeyType::EcP256,
        &[("spire-server-td", TD), ("spire-server-id", "other-server")],
        hour_ago,
        hour_ago,
        true,
    );
    let env = plugin_env(
        &fake,
        &[(
            "AZKV_TEST_MAINTENANCE",
            "refresh=1s,sweep=1s,first_sweep=100ms,stale=1s,backoff=50ms,max_wait=20ms",
        )],
    );
    let refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let p = PluginProcess::launch_bin(&bin, &refs);
    p.init().unwrap();
    p.configure(TD, &standard_hcl(&fake, "release-hooks"))
        .expect("configure");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert_eq!(
        fake.count(Route::DeleteKey),
        0,
        "{:?}",
        fake.deleted_key_names()
    );
    assert_eq!(fake.key_names(), vec![other.to_string()]);
}
