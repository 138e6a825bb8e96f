//! The shipped binary: a fully static x86_64 executable (glibc with crt-static) that starts and
//! completes the go-plugin handshake. Uses `AZKV_RELEASE_BIN` when set (scripts/test-all.sh
//! builds it first), otherwise builds it with scripts/build-release.sh.

mod support;

use std::path::PathBuf;
use std::process::Command;

use support::plugin_host::PluginProcess;

fn release_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("AZKV_RELEASE_BIN") {
        return PathBuf::from(p);
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/build-release.sh");
    let out = Command::new("bash")
        .arg(script)
        .output()
        .expect("run build-release.sh");
    assert!(
        out.status.success(),
        "scripts/build-release.sh failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("AZKV_RELEASE_BIN="))
        .unwrap_or_else(|| panic!("no AZKV_RELEASE_BIN in {stdout}"));
    PathBuf::from(line)
}

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
    use azkv::plugin::proto::keymanager::{HashAlgorithm, KeyType, SignerOpts};
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
