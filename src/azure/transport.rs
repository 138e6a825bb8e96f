//! The production [`Transport`]: ureq agents (direct and per proxy) with a caching resolver.
//! The only module that uses ureq's `unversioned` resolver and connector API, which minor
//! releases may change (Cargo.toml pins ureq to 3.5.x for it).

use std::time::Duration;

use log::debug;

use crate::azure::http::{
    first_env, load_root_certs, never_proxied, proxy_from_env, HttpRequest, HttpResponse, NoProxy,
    Transport, TransportError, Url, CALL_TIMEOUT,
};
use crate::azure::settings::EnvSnapshot;
use crate::azure::types::AzureError;

/// Largest response body read; Key Vault pages and token responses are a few KiB.
const MAX_BODY_BYTES: u64 = 4 * 1024 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const PROBE_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const USER_AGENT: &str = concat!("azure_key_vault-spire-plugin/", env!("CARGO_PKG_VERSION"));

/// How long a name resolution is reused for new connections.
const DNS_TTL: Duration = Duration::from_secs(30);
/// Distinct `scheme://host:port` remembered (a vault, an authority, IMDS: a handful).
const DNS_CACHE_MAX: usize = 32;
/// Most pooled idle connections per host: one per blocking RPC the transport runs at once
/// (`plugin::server::MAX_WORKERS`), so a burst of signing does not close and re-handshake
/// connections it is about to need again.
const MAX_IDLE_PER_HOST: usize = 64;

/// ureq's per-connection buffers. It keeps four (plaintext and TLS, each way) and zero-fills
/// them on first use, so its 128 KiB default made every pooled connection 512 KiB of resident
/// memory: 8 MiB after discovery's 16 parallel fetches. Key Vault and Entra requests and
/// response heads are a few KiB; bodies stream through the input buffer whatever its size.
const IO_BUFFER_BYTES: usize = 16 * 1024;
/// Below the input buffer, so an oversized head fails with ureq's clear "header too large".
const MAX_RESPONSE_HEAD_BYTES: usize = 12 * 1024;

type Resolved = ureq::unversioned::resolver::ResolvedSocketAddrs;

/// ureq resolves the host of every request before it looks in its connection pool, and with a
/// call timeout it does so on a newly spawned thread: every Key Vault call paid a thread start
/// and a DNS lookup even on a kept-alive connection (ms on a busy host, a DNS round trip in
/// Azure). This resolver keeps ureq's resolution (timeout included) for the first request to a
/// host and reuses the answer for `DNS_TTL`; failures are not cached.
#[derive(Debug, Default)]
struct CachingResolver {
    inner: ureq::unversioned::resolver::DefaultResolver,
    cache: std::sync::Mutex<std::collections::HashMap<String, (std::time::Instant, Resolved)>>,
}

impl ureq::unversioned::resolver::Resolver for CachingResolver {
    fn resolve(
        &self,
        uri: &ureq::http::Uri,
        config: &ureq::config::Config,
        timeout: ureq::unversioned::transport::NextTimeout,
    ) -> Result<Resolved, ureq::Error> {
        let key = match (uri.scheme_str(), uri.authority()) {
            (Some(scheme), Some(authority)) => format!("{scheme}://{authority}"),
            _ => return self.inner.resolve(uri, config, timeout),
        };
        let lock = || self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, addrs)) = lock().get(&key) {
            if at.elapsed() < DNS_TTL {
                return Ok(addrs.clone());
            }
        }
        let addrs = self.inner.resolve(uri, config, timeout)?;
        let mut cache = lock();
        if cache.len() >= DNS_CACHE_MAX {
            cache.retain(|_, (at, _)| at.elapsed() < DNS_TTL);
            if cache.len() >= DNS_CACHE_MAX {
                cache.clear();
            }
        }
        cache.insert(key, (std::time::Instant::now(), addrs.clone()));
        Ok(addrs)
    }
}

struct ProxyRoute {
    agent: ureq::Agent,
    /// `host:port` of the proxy, for logs (never its credentials).
    display: String,
}

use ureq::unversioned::transport::{
    ConnectProxyConnector, Connector, RustlsConnector, TcpConnector,
    Transport as UreqTransportLayer,
};

/// The connector chain, ureq's own parts: a CONNECT proxy when one is configured, TCP, rustls.
/// (An own TCP layer that saved system calls was removed: it showed no gain at 5 ms of vault
/// latency, README "Benchmarks".)
fn connector() -> impl Connector<(), Out = impl UreqTransportLayer> {
    ().chain(ConnectProxyConnector::default())
        .chain(TcpConnector::default())
        .chain(RustlsConnector::default())
}

/// The production transport: one pooled agent for direct connections and one per configured
/// proxy, chosen per request (`NO_PROXY` is matched here, with curl semantics, because
/// ureq's own matcher knows no CIDRs or ports).
pub(crate) struct UreqTransport {
    direct: ureq::Agent,
    https_proxy: Option<ProxyRoute>,
    http_proxy: Option<ProxyRoute>,
    no_proxy: NoProxy,
}

impl UreqTransport {
    pub(crate) fn from_env(env: &EnvSnapshot) -> Result<Self, AzureError> {
        let roots = load_root_certs(env)?;
        let certs: Vec<ureq::tls::Certificate<'static>> = roots
            .iter()
            .map(|der| ureq::tls::Certificate::from_der(der).to_owned())
            .collect();
        let tls = ureq::tls::TlsConfig::builder()
            .root_certs(ureq::tls::RootCerts::new_with_certs(&certs))
            .build();
        let make_agent = |proxy: Option<ureq::Proxy>| -> ureq::Agent {
            let config = ureq::Agent::config_builder()
                .http_status_as_error(false)
                // Never follow redirects: a redirect must not carry a bearer token elsewhere.
                .max_redirects(0)
                .proxy(proxy)
                .tls_config(tls.clone())
                .timeout_connect(Some(CONNECT_TIMEOUT))
                .timeout_global(Some(CALL_TIMEOUT))
                .max_idle_connections(2 * MAX_IDLE_PER_HOST)
                .max_idle_connections_per_host(MAX_IDLE_PER_HOST)
                .input_buffer_size(IO_BUFFER_BYTES)
                .output_buffer_size(IO_BUFFER_BYTES)
                .max_response_header_size(MAX_RESPONSE_HEAD_BYTES)
                .user_agent(USER_AGENT)
                .build();
            ureq::Agent::with_parts(config, connector(), CachingResolver::default())
        };
        let route = |names: &[&str]| -> Result<Option<ProxyRoute>, AzureError> {
            let Some(proxy) = proxy_from_env(env, names)? else {
                return Ok(None);
            };
            let display = format!("{}:{}", proxy.host(), proxy.port());
            Ok(Some(ProxyRoute {
                agent: make_agent(Some(proxy)),
                display,
            }))
        };
        let https_proxy = route(&["HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"])?;
        let http_proxy = route(&["HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"])?;
        let no_proxy = NoProxy::parse(
            first_env(env, &["NO_PROXY", "no_proxy"])
                .map(|(_, v)| v)
                .unwrap_or(""),
        );
        if let Some(p) = &https_proxy {
            debug!("https requests go through proxy {}", p.display);
        }
        Ok(UreqTransport {
            direct: make_agent(None),
            https_proxy,
            http_proxy,
            no_proxy,
        })
    }

    fn agent_for(&self, url: &Url) -> &ureq::Agent {
        let bypass =
            never_proxied(&url.host) || self.no_proxy.matches(&url.host, url.effective_port());
        let route = if url.scheme == "https" {
            &self.https_proxy
        } else {
            &self.http_proxy
        };
        match route {
            Some(r) if !bypass => &r.agent,
            _ => &self.direct,
        }
    }
}

fn classify(e: ureq::Error) -> TransportError {
    let retryable = match &e {
        // rustls reports certificate failures as InvalidData I/O errors: not transient.
        ureq::Error::Io(io) => io.kind() != std::io::ErrorKind::InvalidData,
        ureq::Error::Timeout(_)
        | ureq::Error::ConnectionFailed
        | ureq::Error::HostNotFound
        | ureq::Error::Protocol(_) => true,
        _ => false,
    };
    let mut message = e.to_string();
    let lower = message.to_ascii_lowercase();
    if lower.contains("certificate") || lower.contains("unknownissuer") {
        message
            .push_str(" (is the server's CA in the system roots, SSL_CERT_FILE or SSL_CERT_DIR?)");
    }
    TransportError { message, retryable }
}

/// Runs one request within `timeout`; probes get a 1 s connect timeout (IMDS may black-hole
/// packets). A full-length ordinary attempt keeps the agent's own timeouts, set once.
fn run<B: ureq::AsSendBody>(
    agent: &ureq::Agent,
    request: ureq::http::Request<B>,
    probe: bool,
    timeout: Duration,
) -> Result<ureq::http::Response<ureq::Body>, ureq::Error> {
    let connect = if probe {
        PROBE_CONNECT_TIMEOUT
    } else {
        CONNECT_TIMEOUT
    };
    if probe || timeout < CALL_TIMEOUT {
        let request = agent.configure_request(request);
        let request = request.timeout_connect(Some(connect.min(timeout)));
        return agent.run(request.timeout_global(Some(timeout)).build());
    }
    agent.run(request)
}

impl Transport for UreqTransport {
    fn execute(
        &self,
        req: &HttpRequest,
        timeout: Duration,
    ) -> Result<HttpResponse, TransportError> {
        let url = Url::parse(&req.url).map_err(|e| TransportError {
            message: e.to_string(),
            retryable: false,
        })?;
        let agent = self.agent_for(&url);
        let mut builder = ureq::http::Request::builder()
            .method(req.method)
            .uri(req.url.as_str());
        for (k, v) in &req.headers {
            builder = builder.header(k.as_str(), v.as_str());
        }
        let bad_request = |e: ureq::http::Error| TransportError {
            message: format!("cannot build request: {e}"),
            retryable: false,
        };
        let result = match &req.body {
            Some(body) => run(
                agent,
                builder.body(body.clone()).map_err(bad_request)?,
                req.probe,
                timeout,
            ),
            None => run(
                agent,
                builder.body(()).map_err(bad_request)?,
                req.probe,
                timeout,
            ),
        };
        let response = result.map_err(classify)?;
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_ascii_lowercase(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let mut body = response.into_body();
        let read = body.with_config().limit(MAX_BODY_BYTES).read_to_vec();
        let body = read.map_err(|e| {
            let mut t = classify(e);
            t.message = format!("reading the response body (HTTP {status}): {}", t.message);
            t
        })?;
        Ok(HttpResponse {
            status,
            headers,
            body,
            refused_wait: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolver_reuses_answers_per_scheme_host_and_port() {
        use ureq::unversioned::resolver::Resolver;
        let r = CachingResolver::default();
        let config = ureq::config::Config::default();
        let resolve = |uri: &str| {
            let uri: ureq::http::Uri = uri.parse().unwrap();
            r.resolve(
                &uri,
                &config,
                ureq::unversioned::transport::NextTimeout::default(),
            )
            .unwrap()
        };
        let first = resolve("https://127.0.0.1:8443/keys?api-version=7.6");
        assert_eq!(&first[..], &["127.0.0.1:8443".parse().unwrap()]);
        // Another path on the same origin is answered from the cache.
        let again = resolve("https://127.0.0.1:8443/keys/a/sign");
        assert_eq!(&again[..], &first[..]);
        assert_eq!(r.cache.lock().unwrap().len(), 1);
        // Another port is another entry, with its own address.
        let other = resolve("https://127.0.0.1:9443/keys");
        assert_eq!(&other[..], &["127.0.0.1:9443".parse().unwrap()]);
        assert_eq!(r.cache.lock().unwrap().len(), 2);
        // A stale answer is resolved again (and replaced).
        r.cache
            .lock()
            .unwrap()
            .values_mut()
            .for_each(|(at, _)| *at = std::time::Instant::now() - DNS_TTL - Duration::from_secs(1));
        resolve("https://127.0.0.1:8443/");
        let fresh = r
            .cache
            .lock()
            .unwrap()
            .values()
            .filter(|(at, _)| at.elapsed() < DNS_TTL)
            .count();
        assert_eq!(fresh, 1);
    }

    #[test]
    fn proxy_selection_honors_no_proxy() {
        let mut env = EnvSnapshot::new();
        env.insert("HTTPS_PROXY".into(), "http://proxy.example:3128".into());
        env.insert("NO_PROXY".into(), ".internal".into());
        let t = UreqTransport::from_env(&env).unwrap();
        let proxied = t
            .https_proxy
            .as_ref()
            .map(|r| &r.agent as *const ureq::Agent);
        let pick = |u: &str| t.agent_for(&Url::parse(u).unwrap()) as *const ureq::Agent;
        assert_eq!(Some(pick("https://v.vault.azure.net/")), proxied);
        assert_eq!(pick("https://v.internal/"), &t.direct as *const ureq::Agent);
        assert_eq!(
            pick("https://127.0.0.1:8443/"),
            &t.direct as *const ureq::Agent
        );
        // No HTTP_PROXY: plain http goes direct.
        assert_eq!(pick("http://10.0.0.1/"), &t.direct as *const ureq::Agent);
        assert_eq!(
            t.https_proxy.as_ref().unwrap().display,
            "proxy.example:3128"
        );
    }
}
