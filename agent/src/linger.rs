//! The lingering close, nginx's: a connection closed while its client may still be sending (a
//! pipelined request, a body that was refused before it was read) is read from and what comes is
//! dropped, for a moment, before it is closed. A socket closed with unread bytes is reset, and a
//! reset destroys the answers still on their way to the client and fails its writes, so a
//! client that sends its whole body before it reads never sees why it was refused. The fronts
//! and the API close this way.

use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt as _};

/// How long a closing connection is still read from (nginx's `lingering_time`).
pub(crate) const TIME: Duration = Duration::from_secs(1);
/// How much of it is read before it is given up (a client that streams): more than any body a
/// sender may be refused before it is read (the API's are at most 1 MiB; a front's `max_body` is
/// checked against `Content-Length` first; GitHub sends webhooks of up to 25 MB), so that such a
/// sender can finish writing and read why. nginx bounds its lingering close by time alone.
const BYTES: usize = 32 << 20;

/// Read and drop what `conn` sends, until it ends, is silent or fails, or [`TIME`] or [`BYTES`]
/// run out.
pub(crate) async fn drain<R: AsyncRead + Unpin>(conn: &mut R) {
    // On the heap: an array here would sit in every connection's future, copied at each spawn.
    // Small: a connection closed after each answer lingers too (its client's end is unread), and
    // 64 KiB each under such load left the agent's RSS 1.4 MB higher until the next trim.
    let mut sink = vec![0u8; 16 * 1024];
    let mut budget = BYTES;
    let deadline = tokio::time::Instant::now() + TIME;
    while budget > 0 {
        match tokio::time::timeout_at(deadline, conn.read(&mut sink)).await {
            Ok(Ok(n)) if n > 0 => budget = budget.saturating_sub(n),
            _ => return,
        }
    }
}
