//! The release binary inside a root shaped like SPIRE's official spire-server image (built
//! `FROM scratch`) as Kubernetes runs it: the binary, the CA bundle at the image's path, `/tmp`,
//! the `/etc/hosts` and `/etc/resolv.conf` the kubelet writes (cluster search list,
//! `ndots:5`), and `/dev` and `/proc` from the container runtime. No libraries, no
//! nsswitch.conf. The plugin is driven over its socket as spire-server does. Needs root (chroot,
//! mount namespaces, DNS on port 53); only loopback addresses are used.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use azkv::proto::keymanager::{HashAlgorithm, KeyType, SignerOpts};
use support::dns::DnsServer;
use support::fake_azure::FakeAzure;
use support::plugin_host::PluginProcess;
use support::release::release_binary;

const NAMESPACE: &str = "spire";
const TD: &str = "example.org";

/// A temporary image root, removed on drop. Mounts are only ever made inside the plugin's own
/// mount namespace, so removing the tree never reaches the host's /dev or /proc.
struct ImageRoot {
    dir: PathBuf,
}

impl ImageRoot {
    fn new(ca_pem: &str, hosts: &str, resolv_conf: &str) -> ImageRoot {
        let dir = std::env::temp_dir().join(format!("azkv-image-{}", uuid::Uuid::new_v4()));
        let mkdir = |p: &str, mode: u32| {
            use std::os::unix::fs::PermissionsExt;
            let d = dir.join(p);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        mkdir("", 0o755);
        mkdir("etc/ssl/certs", 0o755);
        mkdir("tmp", 0o1777);
        mkdir("dev", 0o755);
        mkdir("proc", 0o555);
        std::fs::copy(release_binary(), dir.join("azure_key_vault")).unwrap();
        std::fs::write(dir.join("etc/ssl/certs/ca-certificates.crt"), ca_pem).unwrap();
        std::fs::write(dir.join("etc/hosts"), hosts).unwrap();
        std::fs::write(dir.join("etc/resolv.conf"), resolv_conf).unwrap();
        let root = ImageRoot { dir };
        assert_eq!(
            root.files(),
            [
                "azure_key_vault",
                "dev/",
                "etc/",
                "etc/hosts",
                "etc/resolv.conf",
                "etc/ssl/",
                "etc/ssl/certs/",
                "etc/ssl/certs/ca-certificates.crt",
                "proc/",
                "tmp/",
            ],
            "the root holds more than the image does"
        );
        root
    }

    /// Every path in the root, directories with a trailing slash, sorted.
    fn files(&self) -> Vec<String> {
        fn walk(base: &Path, d: &Path, out: &mut Vec<String>) {
            for e in std::fs::read_dir(d).unwrap() {
                let p = e.unwrap().path();
                let rel = p.strip_prefix(base).unwrap().display().to_string();
                if p.is_dir() {
                    out.push(format!("{rel}/"));
                    walk(base, &p, out);
                } else {
                    out.push(rel);
                }
            }
        }
        let mut v = Vec::new();
        walk(&self.dir, &self.dir, &mut v);
        v.sort();
        v
    }

    /// Starts the plugin with this directory as `/`, in a private mount namespace where the
    /// host's /proc, and /dev when `with_dev`, are bind-mounted as a container runtime would.
    fn launch(&self, with_dev: bool, envs: &[(&str, &str)]) -> PluginProcess {
        let mounts = if with_dev {
            r#"mount --bind /dev "$1/dev" && mount --bind /proc "$1/proc""#
        } else {
            r#"mount --bind /proc "$1/proc""#
        };
        let mut cmd = Command::new("unshare");
        cmd.args(["--mount", "--propagation", "private", "--", "sh", "-c"])
            .arg(format!(r#"{mounts} && exec chroot "$1" /azure_key_vault"#))
            .arg("sh")
            .arg(&self.dir);
        let mut all = vec![("PLUGIN_UNIX_SOCKET_DIR", "/tmp")];
        all.extend_from_slice(envs);
        PluginProcess::launch_in_root(cmd, &all, &self.dir)
    }
}

impl Drop for ImageRoot {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What the kubelet writes for a pod in `NAMESPACE` with ClusterFirst DNS.
fn kube_resolv_conf(dns: &DnsServer) -> String {
    format!(
        "search {NAMESPACE}.svc.cluster.local svc.cluster.local cluster.local\nnameserver {}\noptions ndots:5\n",
        dns.ip()
    )
}

fn kube_hosts(extra: &str) -> String {
    format!(
        "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n10.244.0.7\tspire-server-0.spire-server.{NAMESPACE}.svc.cluster.local\tspire-server-0\n{extra}"
    )
}

/// Configures against the vault at `https://{host}:{port}/` (Entra ID at the same name),
/// creates a key and checks a signature.
fn configure_and_sign(p: &PluginProcess, fake: &FakeAzure, host: &str) {
    let port = fake.https_addr().port();
    let uri = format!("https://{host}:{port}/");
    p.init().expect("init");
    let hcl = format!(
        "key_vault_uri = \"{uri}\"\ntenant_id = \"{}\"\napp_id = \"{}\"\napp_secret = \"{}\"\nkey_identifier_value = \"image-test\"\n",
        FakeAzure::TENANT,
        FakeAzure::CLIENT_ID,
        FakeAzure::CLIENT_SECRET
    );
    p.configure(TD, &hcl).expect("configure inside the image");
    let pk = p.generate_key("x509-CA-A", KeyType::EcP256).unwrap();
    let d = support::verify::digest(HashAlgorithm::Sha256, b"from scratch");
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

/// The vault name resolved by DNS as in a pod: with `ndots:5`, glibc tries the Kubernetes
/// search list before the name itself, in order, and the CA comes from the image's bundle.
#[test]
fn signs_in_spire_image_resolving_the_vault_through_cluster_dns() {
    let name = "dns-vault.azkv.test";
    let fake = FakeAzure::start();
    let dns = DnsServer::start(&[name]);
    let root = ImageRoot::new(&fake.ca_pem(), &kube_hosts(""), &kube_resolv_conf(&dns));
    let authority = format!("https://{name}:{}/", fake.https_addr().port());
    let mut p = root.launch(true, &[("AZURE_AUTHORITY_HOST", &authority)]);
    configure_and_sign(&p, &fake, name);

    let asked = dns.a_queries();
    let expected: Vec<String> = [
        format!("{name}.{NAMESPACE}.svc.cluster.local"),
        format!("{name}.svc.cluster.local"),
        format!("{name}.cluster.local"),
        name.to_string(),
    ]
    .to_vec();
    assert!(
        asked.len() >= expected.len() && asked[..expected.len()] == expected[..],
        "A queries {asked:?}, expected to start with {expected:?}"
    );
    p.unload();
}

/// The vault name from /etc/hosts (a pod's `hostAliases`), with cluster DNS up and answering
/// NXDOMAIN for it.
#[test]
fn signs_in_spire_image_resolving_the_vault_through_etc_hosts() {
    let name = "hosts-vault.azkv.test";
    let fake = FakeAzure::start();
    let dns = DnsServer::start(&[]);
    let hosts = kube_hosts(&format!(
        "\n# Entries added by HostAliases.\n127.0.0.1\t{name}\n"
    ));
    let root = ImageRoot::new(&fake.ca_pem(), &hosts, &kube_resolv_conf(&dns));
    let authority = format!("https://{name}:{}/", fake.https_addr().port());
    let mut p = root.launch(true, &[("AZURE_AUTHORITY_HOST", &authority)]);
    configure_and_sign(&p, &fake, name);
    // glibc without nsswitch.conf reads /etc/hosts before asking DNS, as Go's resolver does.
    let asked = dns.a_queries();
    assert!(
        !asked.iter().any(|q| q.starts_with(name)),
        "DNS was asked first: {asked:?}"
    );
    p.unload();
}

/// Without /dev the static binary has no source of random bytes (in a static glibc build the
/// `getrandom` crate finds no `getrandom` symbol and falls back to /dev/urandom): Configure,
/// which must create the server id file, fails with an error that says so, and the process
/// stays up to answer.
#[test]
fn without_dev_configure_fails_clearly() {
    let fake = FakeAzure::start();
    let dns = DnsServer::start(&[]);
    let root = ImageRoot::new(&fake.ca_pem(), &kube_hosts(""), &kube_resolv_conf(&dns));
    let authority = format!("https://localhost:{}/", fake.https_addr().port());
    let mut p = root.launch(false, &[("AZURE_AUTHORITY_HOST", &authority)]);
    p.init().expect("init");
    let hcl = format!(
        "key_vault_uri = \"https://localhost:{}/\"\ntenant_id = \"{}\"\napp_id = \"{}\"\napp_secret = \"{}\"\nkey_identifier_file = \"/tmp/server-id\"\n",
        fake.https_addr().port(),
        FakeAzure::TENANT,
        FakeAzure::CLIENT_ID,
        FakeAzure::CLIENT_SECRET
    );
    let (code, msg) = p.configure(TD, &hcl).expect_err("configure without /dev");
    assert!(
        matches!(
            code,
            grpcio::RpcStatusCode::INTERNAL | grpcio::RpcStatusCode::UNAVAILABLE
        ),
        "{code:?}: {msg}"
    );
    assert!(
        msg.contains("random bytes") && msg.contains("/dev/urandom"),
        "unclear error: {msg}"
    );
    assert_eq!(p.health("").expect("still serving"), 1);
    let lines = p.stderr_lines();
    assert!(
        !lines.iter().any(|l| l.contains("panicked")),
        "panic in the logs: {lines:?}"
    );
    p.unload();
}
