//! A child's output (a worker's, an install step's) read as lines in bounded memory.
//!
//! The pipe is read in fixed-size chunks. A line longer than [`MAX_LINE`] bytes is cut there as
//! it arrives: its first [`MAX_LINE`] bytes are handed on, marked as cut, and the rest of it is
//! read and dropped until the next newline. So whatever a child writes (400 MB with no newline),
//! the agent holds one chunk and one line at most per pipe.

use crate::secrets::Secrets;
use std::borrow::Cow;
use tokio::io::{AsyncRead, AsyncReadExt};

/// The longest line kept whole, in bytes.
pub(crate) const MAX_LINE: usize = 16 * 1024;

/// How much is read from the pipe at once.
const CHUNK: usize = 16 * 1024;

/// One line of output, without its line ending.
pub(crate) struct Line<'a> {
    text: Cow<'a, str>,
    /// The line went on past [`MAX_LINE`] bytes; `text` is what was kept.
    cut: bool,
}

impl Line<'_> {
    /// The line as read (secrets not masked), or what was kept of a cut one.
    pub(crate) fn text(&self) -> &str {
        &self.text
    }

    /// The line went on past [`MAX_LINE`] bytes.
    pub(crate) fn is_cut(&self) -> bool {
        self.cut
    }

    /// The line as it is stored and shown: secrets masked, and a cut line marked as cut.
    pub(crate) fn finish(&self, secrets: &Secrets) -> String {
        if self.cut {
            format!("{}… [line cut: {} bytes kept]", secrets.mask(&self.text), self.text.len())
        } else {
            secrets.masked(&self.text)
        }
    }
}

/// Read `pipe` until it closes (or fails), handing each line to `emit`.
pub(crate) async fn read(mut pipe: impl AsyncRead + Unpin, mut emit: impl FnMut(Line<'_>)) {
    let mut chunk = vec![0u8; CHUNK];
    let mut line: Vec<u8> = Vec::with_capacity(256);
    // Inside a line that was cut: everything up to the next newline is dropped.
    let mut dropping = false;
    loop {
        let n = match pipe.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut rest = &chunk[..n];
        while !rest.is_empty() {
            let (segment, ends_line) = match memchr::memchr(b'\n', rest) {
                Some(i) => (&rest[..i], true),
                None => (rest, false),
            };
            rest = &rest[(segment.len() + usize::from(ends_line)).min(rest.len())..];
            if !dropping {
                let room = MAX_LINE - line.len();
                if segment.len() <= room {
                    line.extend_from_slice(segment);
                } else {
                    line.extend_from_slice(&segment[..room]);
                    emit(decode(&line, true));
                    line.clear();
                    dropping = true;
                }
            }
            if ends_line {
                if !dropping {
                    emit(decode(&line, false));
                }
                line.clear();
                dropping = false;
            }
        }
    }
    if !line.is_empty() && !dropping {
        emit(decode(&line, false));
    }
}

fn decode(bytes: &[u8], cut: bool) -> Line<'_> {
    let bytes = if cut {
        // A character split by the cut is left out rather than shown as U+FFFD.
        match std::str::from_utf8(bytes) {
            Err(e) if e.error_len().is_none() => &bytes[..e.valid_up_to()],
            _ => bytes,
        }
    } else {
        bytes.strip_suffix(b"\r").unwrap_or(bytes)
    };
    Line { text: String::from_utf8_lossy(bytes), cut }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `read` makes of `input` written in pieces of `piece` bytes.
    async fn lines_of(input: Vec<u8>, piece: usize) -> Vec<String> {
        let (mut w, r) = tokio::io::duplex(64 * 1024);
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            for part in input.chunks(piece) {
                w.write_all(part).await.expect("write");
            }
        });
        let mut out = Vec::new();
        read(r, |l| out.push(l.finish(&Secrets::default()))).await;
        writer.await.expect("writer");
        out
    }

    #[tokio::test]
    async fn lines_whole_cut_and_unterminated() {
        let mut input = b"one\r\ntwo\n\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', MAX_LINE));
        input.push(b'\n');
        input.extend(std::iter::repeat_n(b'y', 3 * MAX_LINE + 5));
        input.extend(b"\nafter\nno newline");
        for piece in [1, 7, 4096, 1 << 20] {
            let got = lines_of(input.clone(), piece).await;
            assert_eq!(got.len(), 7, "piece {piece}");
            assert_eq!(&got[..3], ["one", "two", ""], "piece {piece}");
            assert_eq!(got[3], "x".repeat(MAX_LINE), "a line of exactly MAX_LINE bytes is whole (piece {piece})");
            assert_eq!(got[4], format!("{}… [line cut: {MAX_LINE} bytes kept]", "y".repeat(MAX_LINE)));
            assert_eq!(&got[5..], ["after", "no newline"], "piece {piece}");
        }
    }

    #[tokio::test]
    async fn a_cut_never_splits_a_character() {
        let mut input = b"a".to_vec();
        input.extend("é".repeat(MAX_LINE).as_bytes());
        let got = lines_of(input, 1000).await;
        assert_eq!(got.len(), 1);
        let kept = 1 + 2 * ((MAX_LINE - 1) / 2);
        assert!(got[0].starts_with("aéé") && !got[0].contains('\u{fffd}'), "{}", &got[0][..20]);
        assert!(got[0].ends_with(&format!("… [line cut: {kept} bytes kept]")), "{}", &got[0][got[0].len() - 40..]);
    }
}
