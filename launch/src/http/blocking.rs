//! The client's blocking shell: a std TCP connection whose connect, write and every read wait
//! at most until the call's deadline. For the CLI, whose clients are threads.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use super::{Reception, Request, Response, Whole};
use crate::LaunchError;

/// Sends `request` to `address` (`host:port`) and reads the whole response, within `within`.
pub fn call(address: &str, request: &Request, within: Duration) -> Result<Response, LaunchError> {
    exchange(address, request, within, Whole::default())
}

/// Sends `request` on a new connection to `address` and gives what it reads to `reception`
/// until that has enough or the server closes the connection, all within `within`.
pub fn exchange<R: Reception>(
    address: &str,
    request: &Request,
    within: Duration,
    mut reception: R,
) -> Result<R::Output, LaunchError> {
    let deadline = Instant::now() + within;
    let timeout = || LaunchError::Timeout {
        address: address.to_string(),
        within,
    };
    let left = || {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            Err(timeout())
        } else {
            Ok(left)
        }
    };
    let transport = |source| LaunchError::Transport {
        address: address.to_string(),
        source,
    };
    let mut stream = connect(address, left()?)?;
    stream.set_write_timeout(Some(left()?)).map_err(transport)?;
    stream
        .write_all(&request.to_bytes(address))
        .map_err(transport)?;
    let mut buffer = vec![0; 16 * 1024];
    loop {
        stream.set_read_timeout(Some(left()?)).map_err(transport)?;
        let read = match stream.read(&mut buffer) {
            Ok(read) => read,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Err(timeout());
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(transport(e)),
        };
        if read == 0 || reception.push(&buffer[..read])? {
            return reception.finish();
        }
    }
}

/// A connection to the first of `address`'s addresses that takes one within `within`.
fn connect(address: &str, within: Duration) -> Result<TcpStream, LaunchError> {
    let failed = |source| LaunchError::Connect {
        address: address.to_string(),
        source,
    };
    let mut last = std::io::Error::new(ErrorKind::NotFound, "no address");
    for candidate in address.to_socket_addrs().map_err(failed)? {
        match TcpStream::connect_timeout(&candidate, within) {
            Ok(stream) => return Ok(stream),
            Err(e) => last = e,
        }
    }
    Err(failed(last))
}
