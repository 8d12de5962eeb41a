//! The front's framing as one function of arbitrary bytes, for fuzzing (`agent/fuzz`, target
//! `frame`) and for a property test in the normal suite. It exists only so that the code facing
//! the internet can be driven without sockets; the front itself never calls it.
//!
//! A panic here is a bug in the framing: besides the parsers' own `unwrap`-free code, it asserts
//! what the front relies on (the head end found piece by piece is the one found at once, the
//! head given to a worker is complete CRLF HTTP/1.1, a body never takes more bytes than it has).

use super::{Body, RequestIds, head_end, parse_request, parse_response};
use std::net::{IpAddr, Ipv4Addr};

/// What [`fuzz_frame`] made of the bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Framed {
    /// Requests whose head and body were framed completely.
    pub requests: usize,
    /// The status the front answered and closed with, if it refused a request.
    pub refused: Option<u16>,
    /// Whether the same bytes, read as a worker's response, had a complete head.
    pub response: bool,
}

/// Frame `bytes` as a client connection would be framed: byte 0 sets the size of the pieces the
/// bytes arrive in (1 to 64), byte 1 whether the peer is a trusted proxy; the rest is the stream
/// of pipelined requests, each head found, parsed and rebuilt, then its body (length or chunked)
/// skipped piece by piece. The same stream is also read as one response to a `GET`.
pub fn fuzz_frame(bytes: &[u8]) -> Framed {
    let [piece, flags, stream @ ..] = bytes else { return Framed::default() };
    let piece = usize::from(piece % 64) + 1;
    let trusted = flags & 1 == 1;
    let ids = RequestIds::new();
    let peer = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let mut framed = Framed::default();
    let mut at = 0;
    while at < stream.len() {
        let buf = &stream[at..];
        let Some(end) = head_end_in_pieces(buf, piece) else { break };
        assert_eq!(head_end(buf, 0), Some(end), "piece by piece and at once disagree");
        let (len, req) = match parse_request(&buf[..end], peer, &move |_| trusted, &ids, true) {
            Ok(Some(parsed)) => parsed,
            Ok(None) => {
                framed.refused = Some(400);
                break;
            }
            Err(status) => {
                framed.refused = Some(status);
                break;
            }
        };
        assert_eq!(len, end, "httparse and head_end disagree on where the head ends");
        check_worker_head(&req.head);
        let Some(body_len) = body_in_pieces(req.body, &buf[len..], piece) else { break };
        framed.requests += 1;
        at += len + body_len;
        if req.upgrade {
            break;
        }
    }
    framed.response = response(stream, &ids);
    framed
}

/// Where the head ends, scanning as the front does: each new piece searched from 3 bytes before it.
fn head_end_in_pieces(buf: &[u8], piece: usize) -> Option<usize> {
    let mut scanned = 0;
    let mut have = 0;
    while have < buf.len() {
        have = (have + piece).min(buf.len());
        if let Some(end) = head_end(&buf[..have], scanned) {
            return Some(end);
        }
        scanned = have.saturating_sub(3);
    }
    None
}

/// The bytes of `buf` the body takes, fed in pieces; `None` if it is malformed or not complete.
fn body_in_pieces(mut body: Body, buf: &[u8], piece: usize) -> Option<usize> {
    let mut used = 0;
    while !body.is_done() {
        if used == buf.len() {
            return None;
        }
        let next = &buf[used..(used + piece).min(buf.len())];
        let took = body.take(next).ok()?;
        assert!(took <= next.len(), "a body took more bytes than it was given");
        used += took;
        if took < next.len() && !body.is_done() {
            return None;
        }
    }
    Some(used)
}

/// The head a worker gets: one complete HTTP/1.x head, every line ending in CRLF.
fn check_worker_head(head: &[u8]) {
    let mut headers = [httparse::EMPTY_HEADER; super::MAX_HEADERS + 8];
    let mut parsed = httparse::Request::new(&mut headers);
    match parsed.parse(head) {
        Ok(httparse::Status::Complete(n)) => assert_eq!(n, head.len(), "bytes after the worker's head"),
        other => panic!("the worker's head does not parse: {other:?}: {:?}", String::from_utf8_lossy(head)),
    }
    let bare_lf = head.iter().enumerate().any(|(i, &b)| b == b'\n' && (i == 0 || head[i - 1] != b'\r'));
    assert!(!bare_lf, "a bare LF in the worker's head: {:?}", String::from_utf8_lossy(head));
}

/// Read `stream` as a worker's answer to a plain `GET`.
fn response(stream: &[u8], ids: &RequestIds) -> bool {
    let get = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
    let Ok(Some((_, req))) = parse_request(get, IpAddr::V4(Ipv4Addr::LOCALHOST), &|_| false, ids, false) else {
        return false;
    };
    match parse_response(stream, &req) {
        Ok(Some(res)) => {
            assert!(res.head_len <= stream.len());
            let mut body = res.body;
            // the fuzzer looks for panics; whether the body frames is not the question
            let _ = body.take(&stream[res.head_len..]);
            true
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn pipelined_requests_are_framed_and_a_bad_one_refused() {
        let mut input = vec![5u8, 0];
        input.extend_from_slice(b"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc");
        input.extend_from_slice(b"POST /b HTTP/1.1\nHost: a\nTransfer-Encoding: chunked\n\n3\r\nabc\r\n0\r\n\r\n");
        input.extend_from_slice(b"GET /c HTTP/1.1\r\nHost: a\r\nContent-Length: +1\r\n\r\n");
        let f = fuzz_frame(&input);
        assert_eq!((f.requests, f.refused), (2, Some(400)));
        assert!(!f.response);
        let f = fuzz_frame(b"\x00\x00HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
        assert!(f.response);
    }

    /// Bytes shaped like HTTP (the fuzzer's job, in miniature, on every test run).
    fn httpish() -> impl Strategy<Value = Vec<u8>> {
        let token = prop_oneof![
            Just(&b"GET / HTTP/1.1\r\n"[..]),
            Just(&b"POST /x HTTP/1.0\n"[..]),
            Just(&b"HTTP/1.1 200 OK\r\n"[..]),
            Just(&b"Host: a\r\n"[..]),
            Just(&b"Content-Length: 3\r\n"[..]),
            Just(&b"Content-Length: 03, 3\r\n"[..]),
            Just(&b"Transfer-Encoding: chunked\r\n"[..]),
            Just(&b"Transfer-Encoding: gzip, chunked\n"[..]),
            Just(&b"Connection: upgrade\r\nUpgrade: websocket\r\n"[..]),
            Just(&b"X-Forwarded-For: 1.2.3.4\r\n"[..]),
            Just(&b"X_Forwarded_Proto: https\r\n"[..]),
            Just(&b"X-Request-Id: \r\n"[..]),
            Just(&b"\r\n"[..]),
            Just(&b"\n"[..]),
            Just(&b"3\r\nabc\r\n"[..]),
            Just(&b"ffffffffffffffff\r\n"[..]),
            Just(&b"0\r\nT: v\n\r\n"[..]),
            Just(&b"0\r\n\r\n"[..]),
            Just(&b"abc"[..]),
        ];
        let noise = proptest::collection::vec(any::<u8>(), 0..6);
        let part = prop_oneof![4 => token.prop_map(<[u8]>::to_vec), 1 => noise];
        (any::<u8>(), any::<u8>(), proptest::collection::vec(part, 0..24)).prop_map(|(p, f, parts)| {
            let mut v = vec![p, f];
            v.extend(parts.concat());
            v
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn random_bytes_never_panic_the_framing(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            fuzz_frame(&bytes);
        }

        #[test]
        fn http_shaped_bytes_never_panic_the_framing(bytes in httpish()) {
            fuzz_frame(&bytes);
        }
    }
}
