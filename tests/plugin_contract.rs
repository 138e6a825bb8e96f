//! The go-plugin and SPIRE contract, checked through the built binary exactly as spire-server
//! drives it: handshake, broker stream, Init, health, Configure validation, RPC argument
//! checks, unload within 2 s, and hclog JSON on stderr.

mod support;

use std::time::Duration;

use azkv::proto::keymanager::{HashAlgorithm, KeyType, SignerOpts};
use grpcio::RpcStatusCode;
use support::plugin_host::{PluginProcess, BIN};

#[test]
fn refuses_to_run_without_the_magic_cookie() {
    let out = std::process::Command::new(BIN)
        .env_clear()
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty(), "nothing may reach stdout");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("This binary is a plugin"), "{err}");
}

#[test]
fn handshake_init_health_and_unload() {
    let mut p = PluginProcess::launch(&[]);
    assert!(p.handshake.starts_with("1|1|unix|/"));
    assert!(p.handshake.ends_with("|grpc|\n"));
    let dir = p.socket.parent().unwrap().to_path_buf();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
        0o700
    );

    let names = p.init().unwrap();
    assert_eq!(
        names,
        vec![
            "spire.plugin.server.keymanager.v1.KeyManager".to_string(),
            "spire.service.common.config.v1.Config".to_string()
        ]
    );
    assert_eq!(p.health("plugin").unwrap(), 1);

    let took = p.unload();
    assert!(took < Duration::from_secs(2), "exit took {took:?}");
    assert_eq!(p.exited.unwrap().code(), Some(0));
    assert!(!p.socket.exists(), "socket left behind");
    assert!(!dir.exists(), "socket directory left behind");
    p.assert_logs_clean(&[]);
}

#[test]
fn honors_plugin_unix_socket_dir_and_ignores_sigint() {
    let base = std::env::temp_dir().join(format!("azkv-sockdir-{}", std::process::id()));
    std::fs::create_dir_all(&base).unwrap();
    let mut p = PluginProcess::launch(&[("PLUGIN_UNIX_SOCKET_DIR", base.to_str().unwrap())]);
    assert!(p.socket.starts_with(&base), "{:?}", p.socket);
    unsafe { libc_kill(p.child.id() as i32, 2) };
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        p.child.try_wait().unwrap().is_none(),
        "SIGINT must not stop the plugin"
    );
    assert_eq!(p.init().unwrap().len(), 2);
    p.unload();
    let _ = std::fs::remove_dir_all(&base);
}

#[test]
fn plugin_unix_socket_group_opens_the_socket_to_that_group_only() {
    use std::os::unix::fs::MetadataExt;
    // Our own primary group: giving the socket to it needs no privilege.
    let gid = std::fs::metadata("/proc/self").unwrap().gid().to_string();
    let mut p = PluginProcess::launch(&[("PLUGIN_UNIX_SOCKET_GROUP", gid.as_str())]);
    let sock = std::fs::metadata(&p.socket).unwrap();
    let dir = std::fs::metadata(p.socket.parent().unwrap()).unwrap();
    assert_eq!(
        (sock.mode() & 0o777, sock.gid().to_string()),
        (0o660, gid.clone())
    );
    assert_eq!((dir.mode() & 0o777, dir.gid().to_string()), (0o710, gid));
    assert_eq!(p.init().unwrap().len(), 2);
    p.unload();

    // A group that does not exist: no handshake, exit 1, the reason in an hclog error line.
    let out = std::process::Command::new(BIN)
        .env_clear()
        .env("KeyManager", "KeyManager")
        .env("PLUGIN_UNIX_SOCKET_GROUP", "no-such-group-azkv")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty(), "no handshake line");
    let err = String::from_utf8_lossy(&out.stderr);
    let line: serde_json::Value = serde_json::from_str(err.lines().last().unwrap()).unwrap();
    assert_eq!(line["@level"], "error");
    assert!(
        line["error"]
            .as_str()
            .unwrap()
            .contains("unknown group \"no-such-group-azkv\""),
        "{err}"
    );
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

#[test]
fn configure_rejects_invalid_configuration_with_reference_messages() {
    let p = PluginProcess::launch(&[]);
    p.init().unwrap();
    let uri = r#"key_vault_uri = "https://spire-server.vault.azure.net/""#;
    let cases: Vec<(String, &str)> = vec![
        (
            r#"key_identifier_value = "server-id""#.to_string(),
            "configuration is missing the Key Vault URI",
        ),
        (uri.to_string(), "configuration requires a key identifier file or a key identifier value"),
        (
            format!("{uri}\nkey_identifier_file = \"/tmp/x\"\nkey_identifier_value = \"v\""),
            "configuration can't have a key identifier file and a key identifier value at the same time",
        ),
        (
            format!("{uri}\nkey_identifier_value = \"{}\"", "A".repeat(257)),
            "Key identifier must not be longer than 256 characters",
        ),
        (
            format!("{uri}\nkey_identifier_value = \"v\"\napp_id = \"a\"\napp_secret = \"s\""),
            "invalid configuration, missing tenant id",
        ),
        (
            format!("{uri}\nkey_identifier_value = \"v\"\ntenant_id = \"t\"\napp_secret = \"s\""),
            "invalid configuration, missing application id",
        ),
        (
            format!("{uri}\nkey_identifier_value = \"v\"\ntenant_id = \"t\"\napp_id = \"a\""),
            "invalid configuration, missing app secret",
        ),
        ("{ malformed json }".to_string(), "unable to decode configuration"),
    ];
    for (hcl, want) in cases {
        let (code, msg) = p.configure("example.org", &hcl).unwrap_err();
        assert_eq!(code, RpcStatusCode::INVALID_ARGUMENT, "{hcl}: {msg}");
        assert!(msg.contains(want), "{hcl}: got {msg:?}, want {want:?}");
    }
    let (code, msg) = p.configure("", uri).unwrap_err();
    assert_eq!(code, RpcStatusCode::INVALID_ARGUMENT);
    assert_eq!(msg, "server core configuration must contain trust_domain");

    // Validate reports every problem as a note and nothing for a valid configuration.
    let v = p
        .validate("example.org", r#"key_identifier_file = "/tmp/x""#)
        .unwrap();
    assert!(!v.valid);
    assert!(
        v.notes
            .iter()
            .any(|n| n.contains("missing the Key Vault URI")),
        "{:?}",
        v.notes
    );
    let v = p
        .validate(
            "example.org",
            &format!("{uri}\nkey_identifier_value = \"v\""),
        )
        .unwrap();
    assert!(v.valid);
    assert!(v.notes.is_empty(), "{:?}", v.notes);
    p.assert_logs_clean(&[]);
}

#[test]
fn keymanager_rpcs_check_arguments_before_configure() {
    let p = PluginProcess::launch(&[]);
    p.init().unwrap();
    let (code, msg) = p.generate_key("", KeyType::EcP256).unwrap_err();
    assert_eq!(
        (code, msg.as_str()),
        (RpcStatusCode::INVALID_ARGUMENT, "key id is required")
    );
    let (code, msg) = p
        .generate_key("x", KeyType::UnspecifiedKeyType)
        .unwrap_err();
    assert_eq!(
        (code, msg.as_str()),
        (RpcStatusCode::INVALID_ARGUMENT, "key type is required")
    );
    let (code, msg) = p.get_public_key("").unwrap_err();
    assert_eq!(
        (code, msg.as_str()),
        (RpcStatusCode::INVALID_ARGUMENT, "key id is required")
    );
    let (code, msg) = p
        .sign(
            "",
            b"x",
            Some(SignerOpts::HashAlgorithm(HashAlgorithm::Sha256 as i32)),
        )
        .unwrap_err();
    assert_eq!(
        (code, msg.as_str()),
        (RpcStatusCode::INVALID_ARGUMENT, "key id is required")
    );
    let (code, msg) = p.sign("k", b"x", None).unwrap_err();
    assert_eq!(
        (code, msg.as_str()),
        (RpcStatusCode::INVALID_ARGUMENT, "signer opts is required")
    );
    // With several arguments missing, the key id is reported first.
    let (_, msg) = p.generate_key("", KeyType::UnspecifiedKeyType).unwrap_err();
    assert_eq!(msg, "key id is required");
    let (_, msg) = p.sign("", b"x", None).unwrap_err();
    assert_eq!(msg, "key id is required");
    // Not configured yet: a clear precondition failure, not a crash.
    let (code, _) = p.get_public_keys().unwrap_err();
    assert_eq!(code, RpcStatusCode::FAILED_PRECONDITION);
}
