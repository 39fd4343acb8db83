//! The client's tokio shell: the whole exchange — connecting, sending, reading — under one
//! deadline. For the tests, whose clients are tasks.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{Reception, Request, Response, Whole};
use crate::LaunchError;

/// Sends `request` to `address` (`host:port`) and reads the whole response, within `within`.
pub async fn call(
    address: &str,
    request: &Request,
    within: Duration,
) -> Result<Response, LaunchError> {
    exchange(address, request, within, Whole::default()).await
}

/// Sends `request` on a new connection to `address` and gives what it reads to `reception`
/// until that has enough or the server closes the connection, all within `within`.
pub async fn exchange<R: Reception>(
    address: &str,
    request: &Request,
    within: Duration,
    mut reception: R,
) -> Result<R::Output, LaunchError> {
    let transport = |source| LaunchError::Transport {
        address: address.to_string(),
        source,
    };
    let exchange = async {
        let mut stream =
            TcpStream::connect(address)
                .await
                .map_err(|source| LaunchError::Connect {
                    address: address.to_string(),
                    source,
                })?;
        stream
            .write_all(&request.to_bytes(address))
            .await
            .map_err(transport)?;
        let mut buffer = vec![0; 16 * 1024];
        loop {
            let read = stream.read(&mut buffer).await.map_err(transport)?;
            if read == 0 || reception.push(&buffer[..read])? {
                return reception.finish();
            }
        }
    };
    tokio::time::timeout(within, exchange)
        .await
        .unwrap_or_else(|_| {
            Err(LaunchError::Timeout {
                address: address.to_string(),
                within,
            })
        })
}
