//! Minimal HTTP/1.1 server: thread per connection, keep-alive, Content-Length and chunked
//! request bodies, optional TLS (rustls, TLS 1.2 + 1.3). Never panics on network input.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{ServerConfig, ServerConnection, StreamOwned};

use super::{dispatch, lock, ListenerKind, Shared};

/// Request head + body limits; larger input gets a 4xx and the connection is closed.
const MAX_HEAD: usize = 64 * 1024;
const MAX_BODY: usize = 8 * 1024 * 1024;
const MAX_LINE: usize = 8 * 1024;

pub(super) struct Request {
    pub method: String,
    /// Path without the query string (not percent-decoded).
    pub path: String,
    /// Raw query string without `?`.
    pub query: String,
    /// Header names lowercased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub keep_alive: bool,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// First value of a query parameter, percent-decoded.
    pub fn query_param(&self, name: &str) -> Option<String> {
        parse_form(&self.query)
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }
}

pub(super) struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn raw(status: u16, content_type: &str, body: Vec<u8>) -> Response {
        Response {
            status,
            headers: vec![("Content-Type".to_string(), content_type.to_string())],
            body,
        }
    }

    pub fn json(status: u16, value: &serde_json::Value) -> Response {
        Response::raw(
            status,
            "application/json; charset=utf-8",
            value.to_string().into_bytes(),
        )
    }

    pub fn empty(status: u16) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    pub fn with_header(mut self, name: &str, value: &str) -> Response {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }
}

pub(super) enum Reply {
    Send(Response),
    /// Announce more bytes than sent, then close.
    Truncate(Response),
    /// Close without answering.
    Drop,
}

pub(super) fn server_config(
    cert_der: Vec<u8>,
    pkcs8_key_der: Vec<u8>,
) -> Result<Arc<ServerConfig>, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS12, &rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(cert_der)],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pkcs8_key_der)),
        )?;
    Ok(Arc::new(cfg))
}

pub(super) fn spawn_listener(
    shared: Arc<Shared>,
    listener: TcpListener,
    kind: ListenerKind,
    tls: Option<Arc<ServerConfig>>,
) -> io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("fake-azure-{kind:?}-accept"))
        .spawn(move || {
            for incoming in listener.incoming() {
                if shared.is_shutdown() {
                    break;
                }
                let stream = match incoming {
                    Ok(s) => s,
                    Err(_) => {
                        // e.g. EMFILE: back off instead of spinning.
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                register_connection(&shared, stream, kind, tls.clone());
            }
        })
}

fn register_connection(
    shared: &Arc<Shared>,
    stream: TcpStream,
    kind: ListenerKind,
    tls: Option<Arc<ServerConfig>>,
) {
    // A clone kept in the registry lets Drop shut the socket down to unblock the reader.
    let Ok(clone) = stream.try_clone() else {
        return;
    };
    let mut conns = lock(&shared.conns);
    let id = conns.next_id;
    conns.next_id += 1;
    conns.streams.insert(id, clone);
    conns.handles.retain(|h| !h.is_finished());
    let thread_shared = Arc::clone(shared);
    let spawned = std::thread::Builder::new()
        .name(format!("fake-azure-{kind:?}-conn-{id}"))
        .spawn(move || {
            let _guard = Unregister {
                shared: Arc::clone(&thread_shared),
                id,
            };
            match tls {
                Some(cfg) => {
                    if let Ok(conn) = ServerConnection::new(cfg) {
                        serve_connection(
                            &thread_shared,
                            kind,
                            TlsTransport(StreamOwned::new(conn, stream)),
                        );
                    }
                }
                None => serve_connection(&thread_shared, kind, PlainTransport(stream)),
            }
        });
    match spawned {
        Ok(h) => conns.handles.push(h),
        Err(_) => {
            if let Some(s) = conns.streams.remove(&id) {
                let _ = s.shutdown(Shutdown::Both);
            }
        }
    }
}

/// Drops the registry's clone of the socket when the connection thread ends, so the
/// file descriptor really closes.
struct Unregister {
    shared: Arc<Shared>,
    id: u64,
}

impl Drop for Unregister {
    fn drop(&mut self) {
        let mut conns = lock(&self.shared.conns);
        if let Some(s) = conns.streams.remove(&self.id) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

trait Transport: Read + Write {
    /// Orderly close (TLS close_notify where applicable).
    fn close(&mut self);
    /// Abrupt close, used by the truncation/drop faults.
    fn abort(&mut self);
}

struct PlainTransport(TcpStream);

impl Read for PlainTransport {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}
impl Write for PlainTransport {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}
impl Transport for PlainTransport {
    fn close(&mut self) {
        let _ = self.0.flush();
        let _ = self.0.shutdown(Shutdown::Both);
    }
    fn abort(&mut self) {
        let _ = self.0.shutdown(Shutdown::Both);
    }
}

struct TlsTransport(StreamOwned<ServerConnection, TcpStream>);

impl Read for TlsTransport {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}
impl Write for TlsTransport {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}
impl Transport for TlsTransport {
    fn close(&mut self) {
        self.0.conn.send_close_notify();
        let _ = self.0.flush();
        let _ = self.0.sock.shutdown(Shutdown::Both);
    }
    fn abort(&mut self) {
        let _ = self.0.sock.shutdown(Shutdown::Both);
    }
}

fn serve_connection<T: Transport>(shared: &Shared, kind: ListenerKind, transport: T) {
    let mut conn = Conn {
        io: transport,
        buf: Vec::new(),
    };
    loop {
        if shared.is_shutdown() {
            conn.io.abort();
            return;
        }
        match conn.read_request() {
            Ok(req) => {
                let keep_alive = req.keep_alive;
                match dispatch(shared, kind, &req) {
                    Reply::Send(resp) => {
                        let echo = req.header("x-ms-client-request-id").map(str::to_string);
                        if write_response(&mut conn.io, resp, keep_alive, 0, echo).is_err() {
                            conn.io.abort();
                            return;
                        }
                        if !keep_alive {
                            conn.io.close();
                            return;
                        }
                    }
                    Reply::Truncate(resp) => {
                        let _ = write_response(&mut conn.io, resp, true, 64, None);
                        conn.io.abort();
                        return;
                    }
                    Reply::Drop => {
                        conn.io.abort();
                        return;
                    }
                }
            }
            Err(ReadError::Closed) => {
                conn.io.abort();
                return;
            }
            Err(ReadError::Bad(status, msg)) => {
                let body = serde_json::json!({"error": {"code": "BadRequest", "message": msg}});
                let _ = write_response(&mut conn.io, Response::json(status, &body), false, 0, None);
                conn.io.close();
                return;
            }
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Payload Too Large",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

/// Writes one response. `extra_len` > 0 announces more body bytes than are sent.
fn write_response<W: Write>(
    w: &mut W,
    resp: Response,
    keep_alive: bool,
    extra_len: usize,
    client_request_id: Option<String>,
) -> io::Result<()> {
    let mut head = format!("HTTP/1.1 {} {}\r\n", resp.status, reason(resp.status));
    for (k, v) in &resp.headers {
        // Header values come from our own code or test input; strip CR/LF to stay well-formed.
        let v: String = v.chars().filter(|c| *c != '\r' && *c != '\n').collect();
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!("x-ms-request-id: {}\r\n", uuid::Uuid::new_v4()));
    if let Some(id) = client_request_id {
        let id: String = id.chars().filter(|c| *c != '\r' && *c != '\n').collect();
        head.push_str(&format!("x-ms-client-request-id: {id}\r\n"));
    }
    let bodyless = resp.status == 204 || resp.status == 304 || resp.status < 200;
    if !bodyless {
        head.push_str(&format!(
            "Content-Length: {}\r\n",
            resp.body.len() + extra_len
        ));
    }
    head.push_str(if keep_alive {
        "Connection: keep-alive\r\n\r\n"
    } else {
        "Connection: close\r\n\r\n"
    });
    let mut out = head.into_bytes();
    if !bodyless {
        out.extend_from_slice(&resp.body);
    }
    w.write_all(&out)?;
    w.flush()
}

enum ReadError {
    /// Peer closed (or I/O failed) — nothing to answer.
    Closed,
    /// Malformed request: answer with this status and close.
    Bad(u16, &'static str),
}

struct Conn<T: Transport> {
    io: T,
    buf: Vec<u8>,
}

impl<T: Transport> Conn<T> {
    fn fill(&mut self) -> Result<(), ReadError> {
        let mut tmp = [0u8; 16 * 1024];
        loop {
            match self.io.read(&mut tmp) {
                Ok(0) => return Err(ReadError::Closed),
                Ok(n) => {
                    self.buf.extend_from_slice(tmp.get(..n).unwrap_or(&[]));
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return Err(ReadError::Closed),
            }
        }
    }

    /// Takes one CRLF-terminated line (without the CRLF).
    fn take_line(&mut self) -> Result<Vec<u8>, ReadError> {
        loop {
            if let Some(pos) = find(&self.buf, b"\r\n") {
                let line: Vec<u8> = self.buf.drain(..pos + 2).take(pos).collect();
                return Ok(line);
            }
            if self.buf.len() > MAX_LINE {
                return Err(ReadError::Bad(400, "line too long"));
            }
            self.fill()?;
        }
    }

    fn take_exact(&mut self, n: usize) -> Result<Vec<u8>, ReadError> {
        while self.buf.len() < n {
            self.fill()?;
        }
        Ok(self.buf.drain(..n).collect())
    }

    fn read_request(&mut self) -> Result<Request, ReadError> {
        // RFC 9112 §2.2: ignore empty lines before the request line.
        let head_end = loop {
            while self.buf.starts_with(b"\r\n") {
                self.buf.drain(..2);
            }
            if let Some(pos) = find(&self.buf, b"\r\n\r\n") {
                break pos + 4;
            }
            if self.buf.len() > MAX_HEAD {
                return Err(ReadError::Bad(431, "request head too large"));
            }
            self.fill()?;
        };
        let head: Vec<u8> = self.buf.drain(..head_end).collect();
        let head = std::str::from_utf8(&head).map_err(|_| ReadError::Bad(400, "head not UTF-8"))?;
        let mut lines = head.split("\r\n");
        let request_line = lines.next().unwrap_or("");
        let mut parts = request_line.split(' ');
        let (Some(method), Some(target), Some(version), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(ReadError::Bad(400, "malformed request line"));
        };
        if method.is_empty()
            || !method.bytes().all(|b| b.is_ascii_uppercase())
            || !target.starts_with('/')
        {
            return Err(ReadError::Bad(400, "malformed request line"));
        }
        let http10 = match version {
            "HTTP/1.1" => false,
            "HTTP/1.0" => true,
            _ => return Err(ReadError::Bad(400, "unsupported HTTP version")),
        };
        let mut headers = Vec::new();
        for line in lines {
            if line.is_empty() {
                continue;
            }
            let Some((name, value)) = line.split_once(':') else {
                return Err(ReadError::Bad(400, "malformed header"));
            };
            if name.is_empty() || name.bytes().any(|b| b.is_ascii_whitespace()) {
                return Err(ReadError::Bad(400, "malformed header name"));
            }
            headers.push((name.to_ascii_lowercase(), value.trim().to_string()));
        }
        let get = |n: &str| -> Vec<&str> {
            headers
                .iter()
                .filter(|(k, _)| k == n)
                .map(|(_, v)| v.as_str())
                .collect()
        };
        let connection = get("connection").join(",").to_ascii_lowercase();
        let mut keep_alive = if http10 {
            connection.contains("keep-alive")
        } else {
            !connection.contains("close")
        };
        let chunked = get("transfer-encoding")
            .iter()
            .any(|v| v.to_ascii_lowercase().contains("chunked"));
        let lengths = get("content-length");
        let content_length = if chunked {
            // RFC 9112 §6.1: with both, Transfer-Encoding wins; the connection must close.
            if !lengths.is_empty() {
                keep_alive = false;
            }
            None
        } else {
            let mut parsed = None;
            for l in &lengths {
                let n: usize = l
                    .parse()
                    .map_err(|_| ReadError::Bad(400, "bad Content-Length"))?;
                if parsed.is_some_and(|p| p != n) {
                    return Err(ReadError::Bad(400, "conflicting Content-Length"));
                }
                parsed = Some(n);
            }
            parsed
        };
        if content_length.is_some_and(|n| n > MAX_BODY) {
            return Err(ReadError::Bad(413, "body too large"));
        }
        let expects_continue = get("expect")
            .iter()
            .any(|v| v.eq_ignore_ascii_case("100-continue"));
        if expects_continue && (chunked || content_length.unwrap_or(0) > 0) {
            if self.io.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").is_err() {
                return Err(ReadError::Closed);
            }
            let _ = self.io.flush();
        }
        let body = if chunked {
            self.read_chunked()?
        } else {
            self.take_exact(content_length.unwrap_or(0))?
        };
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p.to_string(), q.to_string()),
            None => (target.to_string(), String::new()),
        };
        Ok(Request {
            method: method.to_string(),
            path,
            query,
            headers,
            body,
            keep_alive,
        })
    }

    fn read_chunked(&mut self) -> Result<Vec<u8>, ReadError> {
        let mut body = Vec::new();
        loop {
            let line = self.take_line()?;
            let line = std::str::from_utf8(&line).map_err(|_| ReadError::Bad(400, "bad chunk"))?;
            let size_str = line.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size_str, 16)
                .map_err(|_| ReadError::Bad(400, "bad chunk size"))?;
            if size == 0 {
                // Trailer section: lines until an empty one.
                loop {
                    if self.take_line()?.is_empty() {
                        return Ok(body);
                    }
                }
            }
            if body.len().saturating_add(size) > MAX_BODY {
                return Err(ReadError::Bad(413, "body too large"));
            }
            let data = self.take_exact(size)?;
            body.extend_from_slice(&data);
            if self.take_exact(2)? != b"\r\n" {
                return Err(ReadError::Bad(400, "bad chunk terminator"));
            }
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Parses `a=b&c=d` (form bodies and query strings), decoding `+` and `%XX`.
pub(super) fn parse_form(s: &str) -> Vec<(String, String)> {
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (percent_decode(k), percent_decode(v)),
            None => (percent_decode(p), String::new()),
        })
        .collect()
}

pub(super) fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(v) => {
                        out.push(v);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub(super) fn percent_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
