//! Bytes both ways between a client and a worker (the `tcp` front, a websocket after `101`),
//! until either side closes or neither has sent anything for the idle limit: a silent
//! connection must not hold a slot of the fronts' budget for ever.
//!
//! Once one side has closed its half (its end is passed on), the other is given at most
//! [`HALF_CLOSED_IDLE`] of silence: a peer that vanished without a reset (a phone off the network,
//! a dropped NAT entry) would otherwise keep the slot for the whole idle limit, as nothing will
//! ever come from the side that closed. Linux waits as long for an orphaned half-close
//! (`tcp_fin_timeout`); HAProxy has `timeout client-fin` for the same reason.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::Instant;

/// The most silence allowed once one side has closed its half.
pub const HALF_CLOSED_IDLE: Duration = Duration::from_secs(60);

/// Relay until a side closes or both are silent for `idle` (at most [`HALF_CLOSED_IDLE`] once
/// one side has closed its half). Answers whether it ended idle.
pub async fn relay<A, B>(a: &mut A, b: &mut B, idle: Duration) -> bool
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let watch = Arc::new(Watch {
        start: Instant::now(),
        last: AtomicU64::new(0),
        ended: AtomicBool::new(false),
        end: Notify::new(),
    });
    let mut a = Watched { inner: a, watch: watch.clone() };
    let mut b = Watched { inner: b, watch: watch.clone() };
    let watchdog = async {
        loop {
            let limit = if watch.ended.load(Relaxed) { idle.min(HALF_CLOSED_IDLE) } else { idle };
            let deadline = watch.start + Duration::from_millis(watch.last.load(Relaxed)) + limit;
            if Instant::now() >= deadline {
                return;
            }
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => {}
                // The limit may have just become shorter.
                () = watch.end.notified(), if !watch.ended.load(Relaxed) => {}
            }
        }
    };
    tokio::select! {
        _ = tokio::io::copy_bidirectional_with_sizes(&mut a, &mut b, 16 * 1024, 16 * 1024) => false,
        () = watchdog => true,
    }
}

/// What both directions of one relay tell its watchdog.
struct Watch {
    start: Instant,
    /// When either side last sent a byte (or its end), in ms since `start`.
    last: AtomicU64,
    /// Whether a side has closed its half.
    ended: AtomicBool,
    end: Notify,
}

impl Watch {
    /// Something came from a side (a byte or its end): silence counts from now.
    fn heard(&self) {
        self.last.store(self.start.elapsed().as_millis() as u64, Relaxed);
    }
}

/// A stream that notes when it last read anything, and when it ended.
struct Watched<'a, S> {
    inner: &'a mut S,
    watch: Arc<Watch>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<'_, S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut *self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.watch.heard();
        } else if matches!(r, Poll::Ready(Ok(()))) && buf.remaining() > 0 && !self.watch.ended.swap(true, Relaxed) {
            // A read with room that brings nothing: this side's end. It is news like a byte: the
            // other side's half-closed limit runs from it, not from an earlier silence.
            self.watch.heard();
            self.watch.end.notify_one();
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<'_, S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn a_silent_tunnel_ends_at_the_idle_limit_and_a_talking_one_does_not() {
        let (mut a, mut a_peer) = tokio::io::duplex(1024);
        let (mut b, mut b_peer) = tokio::io::duplex(1024);
        let relaying = tokio::spawn(async move { relay(&mut a, &mut b, Duration::from_secs(10)).await });
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_secs(6)).await;
            a_peer.write_all(b"ping").await.unwrap();
            let mut got = [0u8; 4];
            b_peer.read_exact(&mut got).await.unwrap();
        }
        assert!(!relaying.is_finished(), "30 s of traffic every 6 s is not idle");
        tokio::time::sleep(Duration::from_secs(11)).await;
        assert!(relaying.await.unwrap(), "ended idle");
    }

    /// A close is news too: a side that ends after a long silence (a `nc` user typing Ctrl-D
    /// after a pause, a websocket client that leaves after minutes of quiet) gives the other side
    /// the half-closed limit from then on, to answer the end; the relay is not cut at once.
    #[tokio::test(start_paused = true)]
    async fn a_side_that_closes_after_a_long_silence_leaves_the_other_time_to_answer() {
        let (mut a, mut a_peer) = tokio::io::duplex(1024);
        let (mut b, mut b_peer) = tokio::io::duplex(1024);
        let relaying = tokio::spawn(async move { relay(&mut a, &mut b, Duration::from_secs(600)).await });
        tokio::time::sleep(HALF_CLOSED_IDLE + Duration::from_secs(30)).await;
        a_peer.shutdown().await.unwrap();
        let mut got = Vec::new();
        b_peer.read_to_end(&mut got).await.unwrap();
        assert!(got.is_empty(), "the end is passed on");
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(!relaying.is_finished(), "cut at the end, after silence within the idle limit");
        b_peer.write_all(b"the answer to the end").await.unwrap();
        let mut got = [0u8; 21];
        a_peer.read_exact(&mut got).await.expect("the answer reaches the side that closed");
        tokio::time::sleep(HALF_CLOSED_IDLE + Duration::from_secs(1)).await;
        assert!(relaying.is_finished() && relaying.await.unwrap(), "then silence ends it");
    }

    #[tokio::test(start_paused = true)]
    async fn once_a_side_has_closed_the_other_gets_the_half_closed_limit() {
        let (mut a, mut a_peer) = tokio::io::duplex(1024);
        let (mut b, mut b_peer) = tokio::io::duplex(1024);
        let relaying = tokio::spawn(async move { relay(&mut a, &mut b, Duration::from_secs(600)).await });
        a_peer.write_all(b"bye").await.unwrap();
        a_peer.shutdown().await.unwrap();
        let mut got = Vec::new();
        b_peer.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"bye", "the end is passed on");
        // The worker's side may still talk (a half-close is legal) ...
        tokio::time::sleep(HALF_CLOSED_IDLE - Duration::from_secs(5)).await;
        b_peer.write_all(b"still here").await.unwrap();
        let mut got = [0u8; 10];
        a_peer.read_exact(&mut got).await.unwrap();
        tokio::time::sleep(HALF_CLOSED_IDLE - Duration::from_secs(5)).await;
        assert!(!relaying.is_finished(), "talking within the limit");
        // ... but silence past the limit ends it, long before the idle limit.
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert!(relaying.is_finished(), "ended {HALF_CLOSED_IDLE:?} after the last byte");
        assert!(relaying.await.unwrap(), "ended idle");
        drop(b_peer);
    }
}
