//! Finding the end of a `Transfer-Encoding: chunked` body without decoding it.
//!
//! The front passes chunked bodies through byte for byte; it only needs to know where the message
//! ends so that the connection can carry the next one.

/// Framing state of one chunked body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunked {
    state: State,
    /// Chunk data seen so far, framing not counted (what `max_body` limits).
    data: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Size { n: u64, digits: u8 },
    Extension { n: u64 },
    SizeLf { n: u64 },
    Data(u64),
    DataCr,
    DataLf,
    TrailerStart,
    TrailerLine,
    TrailerLf,
    FinalLf,
    Done,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("malformed chunked body")]
pub struct ChunkError;

impl Default for Chunked {
    fn default() -> Self {
        Chunked { state: State::Size { n: 0, digits: 0 }, data: 0 }
    }
}

impl Chunked {
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Bytes of chunk data seen so far, without the sizes, extensions, line ends and trailers.
    pub fn data(&self) -> u64 {
        self.data
    }

    /// Consume bytes of the body; answers how many belong to it (all of `buf`, or fewer when the
    /// body ends inside it).
    pub fn advance(&mut self, buf: &[u8]) -> Result<usize, ChunkError> {
        let mut i = 0;
        while i < buf.len() {
            let b = buf[i];
            self.state = match self.state {
                State::Size { n, digits } => match b {
                    b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                        if digits >= 15 {
                            return Err(ChunkError);
                        }
                        let d = (b as char).to_digit(16).ok_or(ChunkError)? as u64;
                        State::Size { n: n * 16 + d, digits: digits + 1 }
                    }
                    b'\r' if digits > 0 => State::SizeLf { n },
                    b';' | b' ' | b'\t' if digits > 0 => State::Extension { n },
                    _ => return Err(ChunkError),
                },
                State::Extension { n } => match b {
                    b'\r' => State::SizeLf { n },
                    b'\n' => return Err(ChunkError),
                    _ => State::Extension { n },
                },
                State::SizeLf { n } => match (b, n) {
                    (b'\n', 0) => State::TrailerStart,
                    (b'\n', n) => State::Data(n),
                    _ => return Err(ChunkError),
                },
                State::Data(left) => {
                    let take = left.min((buf.len() - i) as u64);
                    i += take as usize;
                    self.data += take;
                    self.state = if take == left { State::DataCr } else { State::Data(left - take) };
                    continue;
                }
                State::DataCr if b == b'\r' => State::DataLf,
                State::DataLf if b == b'\n' => State::Size { n: 0, digits: 0 },
                // Trailer lines end in CRLF like every other line: a bare LF is how a smuggler
                // makes two parsers disagree on where the message ends.
                State::TrailerStart if b == b'\r' => State::FinalLf,
                State::TrailerStart | State::TrailerLine if b == b'\n' => return Err(ChunkError),
                State::TrailerStart | State::TrailerLine if b != b'\r' => State::TrailerLine,
                State::TrailerLine => State::TrailerLf,
                State::TrailerLf if b == b'\n' => State::TrailerStart,
                State::FinalLf if b == b'\n' => {
                    self.state = State::Done;
                    return Ok(i + 1);
                }
                State::Done => return Ok(i),
                _ => return Err(ChunkError),
            };
            i += 1;
        }
        Ok(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_end_in_one_piece() {
        let body = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\nGET /next";
        let mut c = Chunked::default();
        let n = c.advance(body).unwrap();
        assert!(c.is_done());
        assert_eq!(&body[n..], b"GET /next");
        assert_eq!(c.data(), 11, "hello world");
    }

    #[test]
    fn finds_the_end_byte_by_byte_with_trailers() {
        let body = b"A\r\n0123456789\r\n0\r\nX-Trailer: yes\r\n\r\n";
        let mut c = Chunked::default();
        for (i, b) in body.iter().enumerate() {
            assert!(!c.is_done(), "done early at {i}");
            assert_eq!(c.advance(std::slice::from_ref(b)).unwrap(), 1);
        }
        assert!(c.is_done());
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(Chunked::default().advance(b"zz\r\n"), Err(ChunkError));
        assert_eq!(Chunked::default().advance(b"3\r\nabcX"), Err(ChunkError));
        assert_eq!(Chunked::default().advance(b"ffffffffffffffffff\r\n"), Err(ChunkError));
        assert_eq!(Chunked::default().advance(b"0\r\nX-Trailer: a\nGET / HTTP/1.1\r\n\r\n"), Err(ChunkError));
        assert_eq!(Chunked::default().advance(b"0\r\n\n"), Err(ChunkError));
    }
}
