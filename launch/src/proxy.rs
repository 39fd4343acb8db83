//! A loopback TCP proxy to one upstream address, for tests and benchmarks: it can delay every
//! byte by a fixed time in each direction (a link's latency, which this kernel's `tc` cannot add
//! without `netem`) and be cut (a network partition between the clients behind it and the
//! upstream). Bytes are delayed, not throttled: a chunk read at time t is written at t + delay,
//! and chunks keep flowing meanwhile, so throughput is the upstream's.
//!
//! Each connection runs on four threads of its own (a reader and a writer per direction): the
//! proxies here carry a handful of long-lived connections (gRPC streams, etcd clients).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The delay each direction adds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Delay {
    /// Client to upstream.
    pub up: Duration,
    /// Upstream to client.
    pub down: Duration,
}

impl Delay {
    /// The same delay both ways.
    pub fn each_way(delay: Duration) -> Delay {
        Delay {
            up: delay,
            down: delay,
        }
    }
}

/// What the accept loop and the connections share.
struct Shared {
    upstream: Mutex<SocketAddr>,
    cut: AtomicBool,
    stopped: AtomicBool,
    /// Both sockets of every connection carried, to close them when cut.
    sockets: Mutex<Vec<TcpStream>>,
}

impl Shared {
    fn sockets(&self) -> MutexGuard<'_, Vec<TcpStream>> {
        self.sockets.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Closes every connection carried so far.
    fn close_all(&self) {
        for socket in self.sockets().drain(..) {
            let _ = socket.shutdown(Shutdown::Both);
        }
    }
}

/// A running proxy; stops (and closes its connections) on drop.
pub struct Proxy {
    address: SocketAddr,
    shared: Arc<Shared>,
}

impl Proxy {
    /// A proxy on a free loopback port forwarding to `upstream` with `delay`.
    pub fn start(upstream: SocketAddr, delay: Delay) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        Proxy::start_on(listener, upstream, delay)
    }

    /// A proxy taking connections on `listener` (bound beforehand, so a server can be told the
    /// address before its upstream exists) and forwarding them to `upstream` with `delay`.
    pub fn start_on(
        listener: TcpListener,
        upstream: SocketAddr,
        delay: Delay,
    ) -> std::io::Result<Proxy> {
        let address = listener.local_addr()?;
        let shared = Arc::new(Shared {
            upstream: Mutex::new(upstream),
            cut: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            sockets: Mutex::new(Vec::new()),
        });
        let accepting = Arc::clone(&shared);
        std::thread::Builder::new()
            .name(format!("proxy {address}"))
            .spawn(move || accept(&listener, &accepting, delay))?;
        Ok(Proxy { address, shared })
    }

    /// Where clients connect.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// `http://<address>`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.address)
    }

    /// New connections go to `upstream` (a restarted server on a new port).
    pub fn set_upstream(&self, upstream: SocketAddr) {
        *self
            .shared
            .upstream
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = upstream;
    }

    /// Closes every connection through the proxy and refuses new ones; no byte that reaches
    /// the proxy after this returns is forwarded.
    pub fn cut(&self) {
        self.shared.cut.store(true, Ordering::SeqCst);
        self.shared.close_all();
    }

    /// Forwards new connections again.
    pub fn heal(&self) {
        self.shared.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stopped.store(true, Ordering::SeqCst);
        self.cut();
        // Wakes the accept loop so it sees the stop.
        let _ = TcpStream::connect_timeout(&self.address, Duration::from_millis(100));
    }
}

fn accept(listener: &TcpListener, shared: &Arc<Shared>, delay: Delay) {
    for client in listener.incoming() {
        if shared.stopped.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = client else { continue };
        if shared.cut.load(Ordering::SeqCst) {
            continue;
        }
        let upstream = *shared.upstream.lock().unwrap_or_else(|p| p.into_inner());
        let Ok(server) = TcpStream::connect_timeout(&upstream, Duration::from_secs(5)) else {
            continue;
        };
        if let Err(error) = carry(client, server, shared, delay) {
            eprintln!("proxy {upstream}: a connection could not start: {error}");
        }
    }
}

/// Starts the two directions of one connection.
fn carry(
    client: TcpStream,
    server: TcpStream,
    shared: &Shared,
    delay: Delay,
) -> std::io::Result<()> {
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    {
        let mut sockets = shared.sockets();
        sockets.push(client.try_clone()?);
        sockets.push(server.try_clone()?);
    }
    direction(client.try_clone()?, server.try_clone()?, delay.up)?;
    direction(server, client, delay.down)
}

/// Bytes from `from` to `to`, each chunk held until `delay` after it was read.
fn direction(from: TcpStream, to: TcpStream, delay: Duration) -> std::io::Result<()> {
    let (chunks, due) = channel();
    std::thread::Builder::new()
        .name("proxy reader".into())
        .spawn(move || read(from, &chunks, delay))?;
    std::thread::Builder::new()
        .name("proxy writer".into())
        .spawn(move || write(to, &due))?;
    Ok(())
}

fn read(mut from: TcpStream, chunks: &Sender<(Instant, Vec<u8>)>, delay: Duration) {
    let mut buffer = vec![0; 64 * 1024];
    loop {
        match from.read(&mut buffer) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if chunks
                    .send((Instant::now() + delay, buffer[..n].to_vec()))
                    .is_err()
                {
                    return;
                }
            }
        }
    }
}

fn write(mut to: TcpStream, due: &Receiver<(Instant, Vec<u8>)>) {
    for (at, chunk) in due {
        let wait = at.saturating_duration_since(Instant::now());
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
        if to.write_all(&chunk).is_err() {
            return;
        }
    }
    // The reader saw the end: pass it on.
    let _ = to.shutdown(Shutdown::Write);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An upstream that echoes every byte back.
    fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let address = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut reader = stream.try_clone().unwrap();
                    let mut writer = stream;
                    let _ = std::io::copy(&mut reader, &mut writer);
                });
            }
        });
        address
    }

    fn round_trip(address: SocketAddr) -> std::io::Result<Duration> {
        let mut stream = TcpStream::connect(address)?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        let started = Instant::now();
        stream.write_all(b"ping")?;
        let mut back = [0; 4];
        stream.read_exact(&mut back)?;
        assert_eq!(&back, b"ping");
        Ok(started.elapsed())
    }

    #[test]
    fn bytes_arrive_after_the_delay_of_each_direction() {
        let upstream = echo_server();
        let delay = Delay {
            up: Duration::from_millis(30),
            down: Duration::from_millis(20),
        };
        let proxy = Proxy::start(upstream, delay).unwrap();
        let rtt = round_trip(proxy.address()).unwrap();
        assert!(rtt >= Duration::from_millis(50), "{rtt:?}");
        assert!(rtt < Duration::from_millis(1000), "{rtt:?}");
        let plain = Proxy::start(upstream, Delay::default()).unwrap();
        assert!(round_trip(plain.address()).unwrap() < Duration::from_millis(50));
    }

    #[test]
    fn a_cut_closes_connections_and_refuses_new_ones_until_healed() {
        let upstream = echo_server();
        let proxy = Proxy::start(upstream, Delay::default()).unwrap();
        let mut open = TcpStream::connect(proxy.address()).unwrap();
        open.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        open.write_all(b"a").unwrap();
        let mut one = [0; 1];
        open.read_exact(&mut one).unwrap();
        proxy.cut();
        let mut rest = Vec::new();
        let closed = open.read_to_end(&mut rest);
        assert!(closed.is_err() || rest.is_empty(), "{closed:?}");
        assert!(round_trip(proxy.address()).is_err(), "refused while cut");
        proxy.heal();
        round_trip(proxy.address()).unwrap();
    }
}
