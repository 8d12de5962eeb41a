//! Serving the API with the limits a listener needs when anyone can connect to it: a cap on
//! connections (the rest wait in the kernel's accept queue, no fd is spent on them) and a
//! deadline for each request head and each request body, so neither a flood nor slow clients keep
//! `/healthz`, the webhooks or a deploy from being answered. axum's own `serve` has none of them.

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::serve::Listener;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

/// The whole head of a request must arrive within this long.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// The whole body of a request must arrive within this long of its head: hyper bounds only the
/// head, and `POST /hooks/{app}` reads its body before anything is checked, so without this a
/// client that never finishes one would hold an API connection for ever.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a client may leave its answer untaken (no byte of it accepted by the socket) before
/// its connection is closed, nginx's `send_timeout`: hyper has no write timeout, so a client that
/// pipelines requests and never reads their answers would hold an API connection for ever.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(15);
/// How long connections may take to finish when the agent stops.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Serve `router` on `listener`, at most `max_connections` at once (their fds are part of the
/// agent's reserve, `crate::limits`, which the fronts never take), until `shutdown`; then let
/// open connections finish (briefly). Handlers see the peer as `ConnectInfo<SocketAddr>`, over
/// TLS too.
pub async fn serve<L>(mut listener: L, router: Router, max_connections: usize, shutdown: CancellationToken)
where
    L: Listener<Addr = SocketAddr>,
{
    let slots = Arc::new(Semaphore::new(max_connections));
    let graceful = GracefulShutdown::new();
    // The connections belong to this loop: it waits for them before it returns.
    let connections = tokio_util::task::TaskTracker::new();
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = shutdown.cancelled() => break,
        };
        let (io, peer) = tokio::select! {
            c = listener.accept() => c,
            _ = shutdown.cancelled() => break,
        };
        let service = router.clone().map_request(move |req: hyper::Request<Incoming>| {
            let mut req = req.map(|body| Body::new(Deadline::new(body, BODY_TIMEOUT)));
            req.extensions_mut().insert(ConnectInfo(peer));
            req
        });
        // HTTP/1.1 only (TLS offers only `http/1.1` too): the CLI, webhooks and scrapers speak it,
        // and an HTTP/2 server would be half a megabyte more of the agent's resident code.
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_TIMEOUT)
            .serve_connection(
                TokioIo::new(SendDeadline::new(Parting::new(io, permit), SEND_TIMEOUT)),
                TowerToHyperService::new(service),
            );
        let conn = graceful.watch(conn);
        connections.spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "API connection ended");
            }
        });
    }
    drop(listener);
    connections.close();
    let ended = async {
        graceful.shutdown().await;
        connections.wait().await;
    };
    if tokio::time::timeout(SHUTDOWN_GRACE, ended).await.is_err() {
        tracing::debug!("API connections still open at shutdown; closing them");
    }
}

/// A request body that fails once `sleep` ends before it does (a handler reading it gets an error
/// and answers; the connection is not reused).
struct Deadline<B> {
    body: B,
    sleep: Pin<Box<tokio::time::Sleep>>,
}

impl<B> Deadline<B> {
    fn new(body: B, limit: Duration) -> Self {
        Deadline { body, sleep: Box::pin(tokio::time::sleep(limit)) }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {}s", BODY_TIMEOUT.as_secs())]
struct BodyTooSlow;

impl<B> hyper::body::Body for Deadline<B>
where
    B: hyper::body::Body + Unpin,
    B::Error: Into<axum::BoxError>,
{
    type Data = B::Data;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        // What has arrived is passed on whatever the time; only waiting is bounded.
        if let Poll::Ready(frame) = Pin::new(&mut self.body).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        match self.sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(BodyTooSlow.into()))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// A connection that is closed the way nginx closes one ([`crate::linger`]): its side is shut, and
/// what the client still sends is read and dropped for a moment. hyper closes a connection on a
/// request it cannot parse while the client may have sent more behind it (pipelined requests, a
/// body); a socket closed with unread bytes is reset, and a reset destroys the answers to the
/// earlier requests still on their way. The connection's slot is held until it is really closed.
struct Parting<IO: AsyncRead + AsyncWrite + Unpin + Send + 'static> {
    /// `None` only once dropped.
    io: Option<IO>,
    permit: Option<OwnedSemaphorePermit>,
}

impl<IO: AsyncRead + AsyncWrite + Unpin + Send + 'static> Parting<IO> {
    fn new(io: IO, permit: OwnedSemaphorePermit) -> Self {
        Parting { io: Some(io), permit: Some(permit) }
    }

    fn io(&mut self) -> Pin<&mut IO> {
        Pin::new(self.io.as_mut().expect("a connection is not used once dropped"))
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin + Send + 'static> Drop for Parting<IO> {
    fn drop(&mut self) {
        let (Some(mut io), permit) = (self.io.take(), self.permit.take()) else { return };
        // Outside a runtime (the agent is going away) the socket just closes.
        let Ok(rt) = tokio::runtime::Handle::try_current() else { return };
        rt.spawn(async move {
            // the client may be gone already, or not take the end (TLS): it closes either way
            let _ = tokio::time::timeout(crate::linger::TIME, io.shutdown()).await;
            crate::linger::drain(&mut io).await;
            drop(permit);
        });
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin + Send + 'static> AsyncRead for Parting<IO> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        self.io().poll_read(cx, buf)
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin + Send + 'static> AsyncWrite for Parting<IO> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        self.io().poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        self.io().poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.as_ref().is_some_and(|io| io.is_write_vectored())
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.io().poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.io().poll_shutdown(cx)
    }
}

/// A connection whose writes fail once one has waited `limit` without the socket taking a byte.
struct SendDeadline<IO> {
    io: IO,
    limit: Duration,
    /// Running while a write waits for room in the socket.
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<IO> SendDeadline<IO> {
    fn new(io: IO, limit: Duration) -> Self {
        SendDeadline { io, limit, stalled: None }
    }

    /// After the socket refused a write: the error once the stall has lasted `limit`.
    fn stall(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Error> {
        let limit = self.limit;
        let sleep = self.stalled.get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("the client took no byte of its answer for {}s", limit.as_secs()),
            )),
            Poll::Pending => Poll::Pending,
        }
    }

    fn progress<T>(&mut self, done: Poll<std::io::Result<T>>, cx: &mut Context<'_>) -> Poll<std::io::Result<T>> {
        match done {
            Poll::Pending => self.stall(cx).map(Err),
            ready => {
                self.stalled = None;
                ready
            }
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for SendDeadline<IO> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for SendDeadline<IO> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let done = Pin::new(&mut self.io).poll_write(cx, buf);
        self.progress(done, cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let done = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.progress(done, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let done = Pin::new(&mut self.io).poll_flush(cx);
        self.progress(done, cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn a_write_fails_once_the_peer_takes_nothing_for_the_limit_but_a_slow_reader_is_served() {
        let (ours, mut peer) = tokio::io::duplex(16);
        let mut conn = SendDeadline::new(ours, Duration::from_secs(5));
        let started = tokio::time::Instant::now();
        let writing = tokio::spawn(async move {
            let slow = conn.write_all(&[1; 64]).await;
            let never = conn.write_all(&[2; 64]).await;
            (slow, never, started.elapsed())
        });
        // 16 bytes every 4 s: slower than the limit in total, never silent for as long as it.
        let mut got = [0u8; 16];
        for _ in 0..4 {
            tokio::time::sleep(Duration::from_secs(4)).await;
            peer.read_exact(&mut got).await.unwrap();
        }
        let (slow, never, after) = writing.await.unwrap();
        assert!(slow.is_ok(), "{slow:?}");
        assert_eq!(never.unwrap_err().kind(), std::io::ErrorKind::TimedOut);
        // The last byte was taken at 16 s.
        let after = after - Duration::from_secs(16);
        assert!(after >= Duration::from_secs(5) && after < Duration::from_secs(6), "{after:?}");
    }
}
