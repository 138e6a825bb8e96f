//! The TCP layer under ureq's TLS, written for the signing path's system-call count.
//!
//! ureq's own `TcpConnector` spends, on every pooled request, three system calls to probe the
//! socket when the connection leaves the pool and three more when it returns (non-blocking on,
//! peek, non-blocking off), one `setsockopt` before every read and write (the remaining budget
//! differs by microseconds each time), and one `send` for the head and another for the body.
//! strace showed 16 system calls per SignData on the worker thread, and each costs far more
//! inside a VM than the work it guards. This transport:
//! - probes with one `recv(MSG_PEEK | MSG_DONTWAIT)`;
//! - moves a socket timeout only when the budget left is shorter than the one set (by more
//!   than `TIMEOUT_SLACK`) or much longer, so a steady stream of calls sets it once;
//! - holds written bytes until the transport is asked for input (or `FLUSH_AT` bytes are
//!   waiting), so a request leaves in one segment: one wake-up for Key Vault's side too.
//!
//! Everything else is ureq's: TLS, CONNECT proxies and the pool chain on top of it
//! (`connector()`).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use ureq::unversioned::transport::{
    Buffers, ConnectProxyConnector, ConnectionDetails, Connector, Either, LazyBuffers, NextTimeout,
    RustlsConnector, ShutdownHandle, Transport,
};
use ureq::{Error, Timeout};

/// How much longer than the remaining budget a read or write may wait before the socket
/// timeout is moved (the operation's 25 s deadline leaves far more room than this).
const TIMEOUT_SLACK: Duration = Duration::from_millis(250);
/// Held output is sent at the latest once this much is waiting.
const FLUSH_AT: usize = 64 * 1024;

/// The connector chain: CONNECT proxy, this TCP layer, rustls.
pub fn connector() -> impl Connector<(), Out = impl Transport> {
    ().chain(ConnectProxyConnector::default())
        .chain(LeanTcpConnector)
        .chain(RustlsConnector::default())
}

/// Opens the TCP connection unless an earlier connector in the chain already has one.
#[derive(Debug, Default)]
pub struct LeanTcpConnector;

impl<In: Transport> Connector<In> for LeanTcpConnector {
    type Out = Either<In, LeanTcpTransport>;

    fn connect(
        &self,
        details: &ConnectionDetails,
        chained: Option<In>,
    ) -> Result<Option<Self::Out>, Error> {
        if let Some(c) = chained {
            return Ok(Some(Either::A(c)));
        }
        let budget = details.timeout.not_zero().map(|d| *d);
        let stream = connect_any(&details.addrs, budget)?;
        stream.set_nodelay(true)?;
        let config = details.config;
        let transport = LeanTcpTransport::new(
            stream,
            LazyBuffers::new(config.input_buffer_size(), config.output_buffer_size()),
        );
        (details.register_shutdown)(Arc::downgrade(&transport.stream) as Weak<dyn ShutdownHandle>)?;
        Ok(Some(Either::B(transport)))
    }
}

/// Tries each address in turn, sharing what is left of the budget among those not yet tried.
fn connect_any(addrs: &[SocketAddr], budget: Option<Duration>) -> Result<TcpStream, Error> {
    let started = Instant::now();
    let mut last: Option<Error> = None;
    for (i, addr) in addrs.iter().enumerate() {
        let attempt = match budget {
            None => TcpStream::connect(addr),
            Some(total) => {
                let left = total.saturating_sub(started.elapsed());
                if left.is_zero() {
                    return Err(Error::Timeout(Timeout::Connect));
                }
                let share = left / (addrs.len() - i) as u32;
                TcpStream::connect_timeout(addr, share.max(Duration::from_millis(10)))
            }
        };
        match attempt {
            Ok(s) => return Ok(s),
            Err(e) if is_timeout(&e) => last = Some(Error::Timeout(Timeout::Connect)),
            Err(e) => last = Some(Error::Io(e)),
        }
    }
    Err(last.unwrap_or_else(|| {
        Error::Io(io::Error::new(
            io::ErrorKind::AddrNotAvailable,
            "no address to connect to",
        ))
    }))
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
    )
}

pub struct LeanTcpTransport {
    /// Shared (weakly) with ureq's shutdown handle, which can close it from another thread.
    stream: Arc<TcpStream>,
    buffers: LazyBuffers,
    /// Output written by the layers above and not yet sent.
    held: Vec<u8>,
    /// The earliest write deadline among the held writes, and its reason.
    write_deadline: Option<(Instant, Timeout)>,
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
}

impl std::fmt::Debug for LeanTcpTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeanTcpTransport")
            .field("peer", &self.stream.peer_addr().ok())
            .finish()
    }
}

/// Whether a socket timeout currently `set` is close enough to `wanted` to leave alone: never
/// more than `TIMEOUT_SLACK` beyond it, and not so short that a healthy peer would time out.
fn timeout_fits(set: Option<Duration>, wanted: Option<Duration>) -> bool {
    match (set, wanted) {
        (None, None) => true,
        (Some(s), Some(w)) => s <= w + TIMEOUT_SLACK && s + TIMEOUT_SLACK >= w,
        _ => false,
    }
}

/// The remaining budget as a socket timeout: `None` waits forever, an expired one is an error.
fn budget(timeout: NextTimeout) -> Result<Option<Duration>, Error> {
    if timeout.after.is_not_happening() {
        return Ok(None);
    }
    let left = *timeout.after;
    if left.is_zero() {
        return Err(Error::Timeout(timeout.reason));
    }
    Ok(Some(left))
}

impl LeanTcpTransport {
    fn new(stream: TcpStream, buffers: LazyBuffers) -> Self {
        LeanTcpTransport {
            stream: Arc::new(stream),
            buffers,
            held: Vec::new(),
            write_deadline: None,
            read_timeout: None,
            write_timeout: None,
        }
    }

    fn set_read_timeout(&mut self, wanted: Option<Duration>) -> io::Result<()> {
        if !timeout_fits(self.read_timeout, wanted) {
            self.stream.set_read_timeout(wanted)?;
            self.read_timeout = wanted;
        }
        Ok(())
    }

    fn set_write_timeout(&mut self, wanted: Option<Duration>) -> io::Result<()> {
        if !timeout_fits(self.write_timeout, wanted) {
            self.stream.set_write_timeout(wanted)?;
            self.write_timeout = wanted;
        }
        Ok(())
    }

    /// Sends the held output.
    fn flush(&mut self) -> Result<(), Error> {
        if self.held.is_empty() {
            return Ok(());
        }
        let (left, reason) = match self.write_deadline.take() {
            None => (None, Timeout::Global),
            Some((deadline, reason)) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(Error::Timeout(reason));
                }
                (Some(left), reason)
            }
        };
        self.set_write_timeout(left)?;
        let held = std::mem::take(&mut self.held);
        let sent = (&*self.stream).write_all(&held);
        // Keep the allocation for the next request.
        self.held = held;
        self.held.clear();
        match sent {
            Ok(()) => Ok(()),
            Err(e) if is_timeout(&e) => Err(Error::Timeout(reason)),
            Err(e) => Err(Error::Io(e)),
        }
    }
}

impl Transport for LeanTcpTransport {
    fn buffers(&mut self) -> &mut dyn Buffers {
        &mut self.buffers
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), Error> {
        let timeout = timeout.for_write();
        if let Some(left) = budget(timeout)? {
            let deadline = Instant::now() + left;
            if self.write_deadline.is_none_or(|(d, _)| deadline < d) {
                self.write_deadline = Some((deadline, timeout.reason));
            }
        }
        let output = &self.buffers.output()[..amount];
        self.held.extend_from_slice(output);
        if self.held.len() >= FLUSH_AT {
            self.flush()?;
        }
        Ok(())
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, Error> {
        self.flush()?;
        let timeout = timeout.for_read();
        let wanted = budget(timeout)?;
        self.set_read_timeout(wanted)?;
        let started = Instant::now();
        let stream = Arc::clone(&self.stream);
        let input = self.buffers.input_append_buf();
        let read = loop {
            match (&*stream).read(input) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                    // Linux does not restart a socket read that has a timeout.
                    if let Some(w) = wanted {
                        if started.elapsed() >= w {
                            break Err(Error::Timeout(timeout.reason));
                        }
                    }
                }
                Err(e) if is_timeout(&e) => break Err(Error::Timeout(timeout.reason)),
                Err(e) => break Err(Error::Io(e)),
                Ok(n) => break Ok(n),
            }
        }?;
        self.buffers.input_appended(read);
        Ok(read > 0)
    }

    /// Open means the peer has neither closed nor sent anything unasked (ureq's rule): one
    /// non-blocking peek.
    fn is_open(&mut self) -> bool {
        if !self.held.is_empty() {
            return false;
        }
        crate::sys::socket_idle(self.stream.as_raw_fd())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn timeouts_move_only_when_they_must() {
        let s = Duration::from_secs;
        let ms = Duration::from_millis;
        assert!(timeout_fits(None, None));
        assert!(!timeout_fits(None, Some(s(12))));
        assert!(!timeout_fits(Some(s(12)), None));
        // The next call's budget, microseconds apart: left alone.
        assert!(timeout_fits(Some(s(12)), Some(s(12) - ms(1))));
        assert!(timeout_fits(Some(s(12)), Some(s(12) + ms(1))));
        // Late in a call: the socket would wait too long past the budget.
        assert!(!timeout_fits(Some(s(12)), Some(s(5))));
        // A fresh, much longer budget: a healthy slow peer must not time out early.
        assert!(!timeout_fits(Some(s(1)), Some(s(12))));
    }

    #[test]
    fn expired_budget_is_a_timeout() {
        let t = NextTimeout {
            after: ureq::unversioned::transport::time::Duration::Exact(Duration::ZERO),
            reason: Timeout::RecvResponse,
            per_read: None,
            per_write: None,
        };
        assert!(matches!(
            budget(t),
            Err(Error::Timeout(Timeout::RecvResponse))
        ));
        assert_eq!(budget(NextTimeout::default()).unwrap(), None);
    }

    fn transport_to(listener: &TcpListener) -> LeanTcpTransport {
        let stream = connect_any(
            &[listener.local_addr().unwrap()],
            Some(Duration::from_secs(5)),
        )
        .unwrap();
        LeanTcpTransport::new(stream, LazyBuffers::new(1024, 1024))
    }

    fn write(t: &mut LeanTcpTransport, bytes: &[u8]) {
        t.buffers.output()[..bytes.len()].copy_from_slice(bytes);
        t.transmit_output(bytes.len(), NextTimeout::default())
            .unwrap();
    }

    #[test]
    fn writes_leave_together_when_input_is_awaited() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut t = transport_to(&listener);
        let (mut peer, _) = listener.accept().unwrap();
        write(&mut t, b"head ");
        write(&mut t, b"body");
        // Nothing sent yet: the peer sees no bytes.
        peer.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 64];
        assert_eq!(
            peer.read(&mut buf).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        peer.set_nonblocking(false).unwrap();
        let echo = std::thread::spawn(move || {
            let mut got = Vec::new();
            while got.len() < 9 {
                let n = peer.read(&mut buf).unwrap();
                got.extend_from_slice(&buf[..n]);
            }
            peer.write_all(b"reply").unwrap();
            (got, peer)
        });
        assert!(t.await_input(NextTimeout::default()).unwrap());
        assert_eq!(t.buffers.input(), b"reply");
        let (got, peer) = echo.join().unwrap();
        assert_eq!(got, b"head body");
        // Pooled and idle: open. Once the peer closes: not open.
        assert!(t.is_open());
        // On loopback the FIN is delivered within the close call itself.
        drop(peer);
        assert!(!t.is_open());
    }

    #[test]
    fn unasked_bytes_mean_not_open() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut t = transport_to(&listener);
        let (mut peer, _) = listener.accept().unwrap();
        assert!(t.is_open());
        peer.write_all(b"x").unwrap();
        assert!(!t.is_open());
    }

    #[test]
    fn a_silent_peer_times_the_read_out() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut t = transport_to(&listener);
        let (_peer, _) = listener.accept().unwrap();
        let t0 = Instant::now();
        let timeout = NextTimeout {
            after: ureq::unversioned::transport::time::Duration::Exact(Duration::from_millis(100)),
            reason: Timeout::RecvResponse,
            per_read: None,
            per_write: None,
        };
        assert!(matches!(
            t.await_input(timeout),
            Err(Error::Timeout(Timeout::RecvResponse))
        ));
        assert!(t0.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn refused_addresses_are_skipped() {
        // A port nobody listens on (bound, then closed), then a live one.
        let dead = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let live = TcpListener::bind("127.0.0.1:0").unwrap();
        let s = connect_any(
            &[dead, live.local_addr().unwrap()],
            Some(Duration::from_secs(5)),
        );
        assert!(s.is_ok());
        assert!(matches!(
            connect_any(&[dead], Some(Duration::from_secs(5))),
            Err(Error::Io(_))
        ));
    }
}
