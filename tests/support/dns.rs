//! A tiny authoritative DNS responder on a loopback address, port 53 (where glibc's stub
//! resolver sends queries: resolv.conf has no port syntax). It answers A queries for its names
//! with 127.0.0.1, "no data" for their other types (AAAA), NXDOMAIN for everything else, and
//! records every question so tests can assert which names the client tried, in order.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

const TYPE_A: u16 = 1;

pub struct DnsServer {
    addr: SocketAddr,
    queries: Arc<Mutex<Vec<(String, u16)>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl DnsServer {
    /// Binds the first free `127.53.0.N:53` (tests run in parallel) and serves `names`
    /// (lowercase, without the trailing dot). Needs root (port 53).
    pub fn start(names: &[&str]) -> DnsServer {
        let socket = (1..=250u8)
            .find_map(|n| UdpSocket::bind((Ipv4Addr::new(127, 53, 0, n), 53)).ok())
            .expect("dns: no free 127.53.0.N:53 (is the test running as root?)");
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .expect("dns: read timeout");
        let addr = socket.local_addr().expect("dns: local addr");
        let queries = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let names: Vec<String> = names.iter().map(|n| n.to_ascii_lowercase()).collect();
        let thread = {
            let queries = Arc::clone(&queries);
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut buf = [0u8; 1500];
                while !stop.load(Ordering::SeqCst) {
                    let Ok((n, peer)) = socket.recv_from(&mut buf) else {
                        continue;
                    };
                    if let Some((name, qtype, reply)) = answer(&buf[..n], &names) {
                        queries.lock().unwrap().push((name, qtype));
                        let _ = socket.send_to(&reply, peer);
                    }
                }
            })
        };
        DnsServer {
            addr,
            queries,
            stop,
            thread: Some(thread),
        }
    }

    pub fn ip(&self) -> std::net::IpAddr {
        self.addr.ip()
    }

    /// Every question received so far as (name, qtype), in arrival order.
    pub fn queries(&self) -> Vec<(String, u16)> {
        self.queries.lock().unwrap().clone()
    }

    /// The names asked for type A, in order.
    pub fn a_queries(&self) -> Vec<String> {
        self.queries()
            .into_iter()
            .filter(|(_, t)| *t == TYPE_A)
            .map(|(n, _)| n)
            .collect()
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Parses one query (header + one question) and builds the reply; None for anything else.
fn answer(q: &[u8], names: &[String]) -> Option<(String, u16, Vec<u8>)> {
    if q.len() < 12 || q[2] & 0x80 != 0 || u16::from_be_bytes([q[4], q[5]]) != 1 {
        return None;
    }
    let mut i = 12;
    let mut labels = Vec::new();
    loop {
        let len = *q.get(i)? as usize;
        i += 1;
        if len == 0 {
            break;
        }
        if len > 63 {
            return None; // no compression in questions
        }
        labels.push(String::from_utf8_lossy(q.get(i..i + len)?).to_ascii_lowercase());
        i += len;
    }
    let qtype = u16::from_be_bytes([*q.get(i)?, *q.get(i + 1)?]);
    let question_end = i + 4;
    let question = q.get(12..question_end)?;
    let name = labels.join(".");
    let known = names.contains(&name);
    let with_a = known && qtype == TYPE_A;

    let mut r = Vec::with_capacity(question_end + 16);
    r.extend_from_slice(&q[0..2]); // id
    let rd = q[2] & 0x01;
    r.push(0x80 | 0x04 | rd); // QR, AA, RD copied; opcode QUERY
    r.push(0x80 | if known { 0 } else { 3 }); // RA; NOERROR or NXDOMAIN
    r.extend_from_slice(&[0, 1, 0, u8::from(with_a), 0, 0, 0, 0]);
    r.extend_from_slice(question);
    if with_a {
        r.extend_from_slice(&[0xc0, 0x0c]); // the name in the question
        r.extend_from_slice(&TYPE_A.to_be_bytes());
        r.extend_from_slice(&[0, 1]); // IN
        r.extend_from_slice(&5u32.to_be_bytes()); // TTL
        r.extend_from_slice(&[0, 4, 127, 0, 0, 1]);
    }
    Some((name, qtype, r))
}
