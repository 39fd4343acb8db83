//! The `moe` tool's HTTP/1.1 client: the gateway's and the cluster's endpoints, one request per
//! connection, each with a connect and a read deadline.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// How long a connection may take to open.
const CONNECT: Duration = Duration::from_secs(2);

/// `POST path` with a JSON `body` over HTTP/1.1; the whole response (a minute at most).
pub fn http_post(address: &str, path: &str, body: &str) -> Option<String> {
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    exchange(address, &request, Duration::from_secs(60))
}

/// `GET path` over HTTP/1.1; the whole response (5 s at most), or `None` when nothing answers.
pub fn http_get(address: &str, path: &str) -> Option<String> {
    let request = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    exchange(address, &request, Duration::from_secs(5))
}

/// Sends `request` on a new connection to `address` and reads the response until the server
/// closes it, for `read` at most; `None` when any step fails.
fn exchange(address: &str, request: &str, read: Duration) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(&address.parse().ok()?, CONNECT).ok()?;
    stream.set_read_timeout(Some(read)).ok()?;
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    Some(response)
}
