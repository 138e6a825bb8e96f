//! examples/k8s: the manifests put this plugin into the official spire-server image with AKS
//! workload identity, and the `plugin_data` in their server.conf passes the binary's own
//! Validate. Plain text parsing (the manifests are ours and simple), no YAML crate.

mod support;

use support::plugin_host::PluginProcess;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/k8s");

fn read(name: &str) -> String {
    std::fs::read_to_string(format!("{DIR}/{name}")).unwrap()
}

/// The YAML documents of `text` whose `kind:` is `kind`.
fn documents<'a>(text: &'a str, kind: &str) -> Vec<&'a str> {
    text.split("\n---\n")
        .filter(|d| d.lines().any(|l| l.trim_end() == format!("kind: {kind}")))
        .collect()
}

/// The block scalar under `key: |` (dedented): the ConfigMap's file contents.
fn block_scalar(doc: &str, key: &str) -> String {
    let mut lines = doc.lines().skip_while(|l| l.trim() != format!("{key}: |"));
    assert!(lines.next().is_some(), "no `{key}: |` in\n{doc}");
    let body: Vec<&str> = lines.collect();
    let indent = body
        .iter()
        .find(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .expect("empty block");
    body.iter()
        .take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() >= indent)
        .map(|l| l.get(indent..).unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The body of the first `{ … }` block after `opening` in HCL `text` (braces inside strings
/// do not count: shared-keys templates hold `{{ … }}`).
fn hcl_block<'a>(text: &'a str, opening: &str) -> &'a str {
    let start = text
        .find(opening)
        .unwrap_or_else(|| panic!("no {opening:?} in\n{text}"))
        + opening.len();
    let open = start + text[start..].find('{').expect("no {") + 1;
    let (mut depth, mut in_str, mut escaped) = (1, false, false);
    for (i, c) in text[open..].char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if in_str => escaped = true,
            '"' => in_str = !in_str,
            '{' if !in_str => depth += 1,
            '}' if !in_str => {
                depth -= 1;
                if depth == 0 {
                    return &text[open..open + i];
                }
            }
            _ => {}
        }
    }
    panic!("unclosed block after {opening:?}")
}

/// The string value of `key = "…"` in an HCL body.
fn hcl_string(body: &str, key: &str) -> String {
    body.lines()
        .find_map(|l| {
            let (k, v) = l.split_once('=')?;
            (k.trim() == key).then(|| v.trim().split('"').nth(1).map(str::to_string))?
        })
        .unwrap_or_else(|| panic!("no {key} in\n{body}"))
}

#[test]
fn k8s_server_conf_plugin_data_passes_validate() {
    let manifests = read("spire-server.yaml");
    let config_maps = documents(&manifests, "ConfigMap");
    assert_eq!(config_maps.len(), 1);
    let server_conf = block_scalar(config_maps[0], "server.conf");
    let trust_domain = hcl_string(hcl_block(&server_conf, "server"), "trust_domain");
    let key_manager = hcl_block(&server_conf, "KeyManager \"azure_key_vault\"");
    let plugin_data = hcl_block(key_manager, "plugin_data");
    assert!(plugin_data.contains("key_vault_uri"), "{plugin_data}");

    let p = PluginProcess::launch(&[]);
    p.init().unwrap();
    let v = p.validate(&trust_domain, plugin_data).expect("Validate");
    assert!(
        v.valid && v.notes.is_empty(),
        "plugin_data of examples/k8s fails Validate: {:?}\n{plugin_data}",
        v.notes
    );

    // The server id must survive restarts: key_identifier_file under the data dir, which the
    // StatefulSet keeps on a persistent volume.
    let data_dir = hcl_string(hcl_block(&server_conf, "server"), "data_dir");
    assert!(hcl_string(plugin_data, "key_identifier_file").starts_with(&format!("{data_dir}/")));
    let statefulset = documents(&manifests, "StatefulSet");
    assert_eq!(statefulset.len(), 1);
    assert!(statefulset[0].contains(&format!("mountPath: {data_dir}\n")));
    assert!(statefulset[0].contains("volumeClaimTemplates:"));
}

#[test]
fn k8s_manifests_use_the_official_image_and_workload_identity() {
    let manifests = read("spire-server.yaml");
    let dockerfile = read("Dockerfile");
    let server_conf = block_scalar(documents(&manifests, "ConfigMap")[0], "server.conf");
    let key_manager = hcl_block(&server_conf, "KeyManager \"azure_key_vault\"");

    // The derived image: the official server image plus the binary where plugin_cmd points.
    let lines: Vec<&str> = dockerfile
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert_eq!(lines.len(), 2, "{dockerfile}");
    assert_eq!(lines[0], "FROM ghcr.io/spiffe/spire-server:1.13.3");
    let plugin_cmd = hcl_string(key_manager, "plugin_cmd");
    assert!(
        lines[1].starts_with("COPY ") && lines[1].ends_with(&format!(" {plugin_cmd}")),
        "the Dockerfile does not put the binary at plugin_cmd {plugin_cmd}: {}",
        lines[1]
    );
    assert!(!hcl_string(key_manager, "plugin_checksum").is_empty());

    // Workload identity: the annotated service account, used by a pod carrying the label.
    let sa = documents(&manifests, "ServiceAccount");
    assert_eq!(sa.len(), 1);
    assert!(sa[0].contains("\n    azure.workload.identity/client-id: "));
    assert!(sa[0].contains("\n  name: spire-server\n"));
    let sts = documents(&manifests, "StatefulSet")[0];
    let pod = &sts[sts.find("  template:").expect("pod template")..];
    assert!(pod.contains("\n        azure.workload.identity/use: \"true\"\n"));
    assert!(pod.contains("\n      serviceAccountName: spire-server\n"));
    // The webhook injects the credential variables; the manifest must not pin them.
    for var in [
        "AZURE_CLIENT_ID",
        "AZURE_TENANT_ID",
        "AZURE_FEDERATED_TOKEN_FILE",
        "AZURE_AUTHORITY_HOST",
    ] {
        assert!(!pod.contains(&format!("name: {var}")), "{var} set by hand");
    }
}
