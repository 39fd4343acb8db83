//! An accepted TCP stream whose reads are watched by a [`ReadHook`] (which is told the bytes
//! that arrive, and may fail a read that waited too long); writes go straight through.
//!
//! Not here: what the hooks do (the HTTP connection's activity, the gRPC preface deadline).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// What happens around a socket's reads.
pub trait ReadHook: Unpin {
    /// `bytes` (possibly 0, the end of the stream) were read.
    fn arrived(&mut self, bytes: usize);

    /// A read waits for bytes: `Ready` with the error to fail it with instead.
    fn poll_waiting(&mut self, _cx: &mut Context<'_>) -> Poll<io::Error> {
        Poll::Pending
    }
}

/// A TCP stream with a [`ReadHook`].
pub struct Socket<H> {
    stream: TcpStream,
    hook: H,
}

impl<H: ReadHook> Socket<H> {
    pub fn new(stream: TcpStream, hook: H) -> Self {
        Self { stream, hook }
    }

    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }
}

impl<H: ReadHook> AsyncRead for Socket<H> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                this.hook.arrived(buf.filled().len() - before);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            Poll::Pending => this.hook.poll_waiting(cx).map(Err),
        }
    }
}

impl<H: ReadHook> AsyncWrite for Socket<H> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
