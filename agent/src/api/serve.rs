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
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

/// The whole head of a request must arrive within this long.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// The whole body of a request must arrive within this long of its head: hyper bounds only the
/// head, and `POST /hooks/{app}` reads its body before anything is checked, so without this a
/// client that never finishes one would hold an API connection for ever.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(15);
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
            .serve_connection(TokioIo::new(io), TowerToHyperService::new(service));
        let conn = graceful.watch(conn);
        connections.spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "API connection ended");
            }
            drop(permit);
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
