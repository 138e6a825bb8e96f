//! A CONNECT proxy (`HTTPS_PROXY`) that maps one public host name to a loopback address.
//!
//! Microsoft's Go SDK (SPIRE's built-in Key Vault plugin) only sends its token to a host that
//! ends in `.vault.azure.net`, port included, so the vault must be addressed as
//! `https://<name>.vault.azure.net/`. Both the Go HTTP client and the plugin honour
//! `HTTPS_PROXY` for that host and never proxy loopback (the managed-identity endpoint), so the
//! proxy sees exactly the vault traffic. Every CONNECT target is recorded; targets other than
//! the mapped one are refused with 403.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct ConnectProxy {
    addr: SocketAddr,
    targets: Arc<Mutex<Vec<String>>>,
}

impl ConnectProxy {
    /// Serves until the test process exits; `host:port` is tunnelled to `to`.
    pub fn start(host_port: &str, to: SocketAddr) -> ConnectProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let targets = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&targets);
        let mapped = host_port.to_ascii_lowercase();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let seen = Arc::clone(&seen);
                let mapped = mapped.clone();
                std::thread::spawn(move || tunnel(conn, &mapped, to, &seen));
            }
        });
        ConnectProxy { addr, targets }
    }

    /// `http://127.0.0.1:<port>`, for `HTTPS_PROXY`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every CONNECT target so far, in arrival order.
    pub fn targets(&self) -> Vec<String> {
        self.targets.lock().map(|t| t.clone()).unwrap_or_default()
    }
}

fn tunnel(client: TcpStream, mapped: &str, to: SocketAddr, seen: &Mutex<Vec<String>>) {
    let _ = client.set_read_timeout(Some(Duration::from_secs(30)));
    let mut reader = BufReader::new(match client.try_clone() {
        Ok(c) => c,
        Err(_) => return,
    });
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    // Skip the remaining head (Host, Proxy-Connection, ...).
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) if line == "\r\n" || line == "\n" => break,
            Ok(_) => {}
        }
    }
    let mut parts = request_line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let target = target.to_ascii_lowercase();
    if let Ok(mut s) = seen.lock() {
        s.push(format!("{method} {target}"));
    }
    let mut client_w = client;
    if method != "CONNECT" || target != mapped {
        let _ = client_w.write_all(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n");
        return;
    }
    let Ok(upstream) = TcpStream::connect_timeout(&to, Duration::from_secs(5)) else {
        let _ = client_w.write_all(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n");
        return;
    };
    if client_w
        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        .is_err()
    {
        return;
    }
    let _ = client_w.set_read_timeout(None);
    // Bytes the client sent after the head (a TLS ClientHello) may sit in the reader's buffer.
    let buffered = reader.buffer().to_vec();
    let (Ok(mut up_w), Ok(mut up_r)) = (upstream.try_clone(), upstream.try_clone()) else {
        return;
    };
    if !buffered.is_empty() && up_w.write_all(&buffered).is_err() {
        return;
    }
    let mut client_r = reader.into_inner();
    let down = std::thread::spawn(move || {
        let _ = std::io::copy(&mut up_r, &mut client_w);
        let _ = client_w.shutdown(Shutdown::Write);
    });
    let mut buf = [0u8; 16 * 1024];
    loop {
        match client_r.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if up_w.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = up_w.shutdown(Shutdown::Write);
    let _ = down.join();
}
