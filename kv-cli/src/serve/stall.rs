//! A connection's socket that fails a write the client has taken nothing of for a while: a
//! client that stops reading a response is disconnected, instead of holding its connection,
//! its request's slot and the response body for as long as it stays connected. (hyper stops
//! polling a response body while its write buffer is full, so nothing inside the body can
//! notice.)

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// `inner`, whose writes fail with `TimedOut` once one has been pending for `limit`.
///
/// What it measures is how long the socket stays unwritable: Linux marks a socket writable
/// again only once a third of its send buffer is free, so a client that reads slower than a
/// third of that buffer per `limit` counts as stalled too. The limit is its own option
/// (`--write-timeout`, 60 s), far above a request's head timeout.
pub(crate) struct StallLimited<S> {
    inner: S,
    limit: Duration,
    /// Allocated at the first write that waits, then reset for each later one.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// A write is waiting, since the timer's start.
    armed: bool,
}

impl<S> StallLimited<S> {
    pub(crate) fn new(inner: S, limit: Duration) -> Self {
        StallLimited {
            inner,
            limit,
            timer: None,
            armed: false,
        }
    }

    /// After the socket said Pending: an error once the stall has lasted `limit`.
    fn poll_stall<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        let limit = self.limit;
        let deadline = tokio::time::Instant::now() + limit;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if !self.armed {
            timer.as_mut().reset(deadline);
            self.armed = true;
        }
        ready!(timer.as_mut().poll(cx));
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("the client read nothing of the response for {limit:?}"),
        )))
    }

    fn progressed<T>(
        &mut self,
        result: Poll<io::Result<T>>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<T>> {
        match result {
            Poll::Pending => self.poll_stall(cx),
            ready => {
                self.armed = false;
                ready
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for StallLimited<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for StallLimited<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.progressed(result, cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.progressed(result, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let result = Pin::new(&mut self.inner).poll_flush(cx);
        self.progressed(result, cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
