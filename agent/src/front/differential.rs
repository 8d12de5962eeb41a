//! The `http` front's framing against hyper's, on generated requests: valid ones, smuggling
//! shapes (both framings, odd `Content-Length` and `Transfer-Encoding` values, trailers), bare
//! LF line ends. Whatever the front accepts, hyper must frame the same way, both as the client
//! sent it and as the front passes it on; what hyper would frame differently, the front refuses.

use super::http::{Body, RequestIds, head_end, parse_request};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use proptest::prelude::*;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One request as a worker sees it: method, target, decoded body.
type Seen = (String, String, Vec<u8>);

#[derive(Debug, Clone)]
enum Framing {
    None,
    /// `Content-Length` written as the strategy chose (maybe not the body's length at all).
    Length {
        body: Vec<u8>,
        values: Vec<String>,
    },
    Chunked {
        chunks: Vec<Vec<u8>>,
        te: String,
        trailers: Vec<String>,
        also_length: Option<String>,
    },
}

#[derive(Debug, Clone)]
struct Req {
    method: &'static str,
    path: String,
    framing: Framing,
    bare_lf: bool,
    extra: Vec<(String, String)>,
}

impl Req {
    fn bytes(&self) -> Vec<u8> {
        let nl = if self.bare_lf { "\n" } else { "\r\n" };
        let mut s = format!("{} {} HTTP/1.1{nl}Host: app{nl}", self.method, self.path);
        for (k, v) in &self.extra {
            s.push_str(&format!("{k}: {v}{nl}"));
        }
        let mut body = Vec::new();
        match &self.framing {
            Framing::None => {}
            Framing::Length { body: b, values } => {
                for v in values {
                    s.push_str(&format!("Content-Length: {v}{nl}"));
                }
                body = b.clone();
            }
            Framing::Chunked { chunks, te, trailers, also_length } => {
                s.push_str(&format!("Transfer-Encoding: {te}{nl}"));
                if let Some(v) = also_length {
                    s.push_str(&format!("Content-Length: {v}{nl}"));
                }
                for c in chunks {
                    body.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
                    body.extend_from_slice(c);
                    body.extend_from_slice(b"\r\n");
                }
                body.extend_from_slice(b"0\r\n");
                for t in trailers {
                    body.extend_from_slice(t.as_bytes());
                }
                body.extend_from_slice(b"\r\n");
            }
        }
        s.push_str(nl);
        let mut out = s.into_bytes();
        out.extend_from_slice(&body);
        out
    }
}

fn framing() -> impl Strategy<Value = Framing> {
    let body = proptest::collection::vec(b'a'..=b'z', 0..40);
    let length_value = |n: usize| {
        prop_oneof![
            4 => Just(n.to_string()),
            1 => Just(format!("+{n}")),
            1 => Just(format!(" {n} ")),
            1 => Just(format!("0{n}")),
            1 => Just(format!("{n}, {n}")),
            1 => Just(format!("{}", n + 1)),
            1 => Just("-1".to_string()),
        ]
    };
    prop_oneof![
        2 => Just(Framing::None),
        3 => body.clone().prop_flat_map(move |b| {
            let n = b.len();
            (Just(b), proptest::collection::vec(length_value(n), 1..3))
                .prop_map(|(body, values)| Framing::Length { body, values })
        }),
        3 => (
            proptest::collection::vec(proptest::collection::vec(b'a'..=b'z', 1..20), 0..4),
            prop_oneof![
                4 => Just("chunked".to_string()),
                1 => Just("Chunked".to_string()),
                1 => Just("gzip, chunked".to_string()),
                1 => Just("chunked, gzip".to_string()),
                1 => Just("identity".to_string()),
            ],
            proptest::collection::vec(
                prop_oneof![Just("X-T: 1\r\n".to_string()), Just("X-T: 1\n".to_string())],
                0..2
            ),
            proptest::option::weighted(0.15, Just("3".to_string())),
        )
            .prop_map(|(chunks, te, trailers, also_length)| Framing::Chunked { chunks, te, trailers, also_length }),
    ]
}

fn request() -> impl Strategy<Value = Req> {
    (
        prop_oneof![Just("GET"), Just("POST"), Just("PUT"), Just("DELETE")],
        "/[a-z0-9]{0,8}",
        framing(),
        proptest::bool::weighted(0.2),
        proptest::collection::vec(
            prop_oneof![
                Just(("X-Forwarded-For".to_string(), "6.6.6.6".to_string())),
                Just(("Connection".to_string(), "keep-alive".to_string())),
                Just(("Accept".to_string(), "*/*".to_string())),
            ],
            0..2,
        ),
    )
        .prop_map(|(method, path, framing, bare_lf, extra)| Req { method, path, framing, bare_lf, extra })
}

/// What the front makes of `raw`: the requests it passes on (as bytes for the worker, and as
/// what they are), and whether it refused the rest.
fn front_frames(raw: &[u8]) -> (Vec<u8>, usize, bool) {
    let peer: IpAddr = "10.0.0.9".parse().unwrap_or(IpAddr::from([10, 0, 0, 9]));
    let untrusted = |_: IpAddr| false;
    let mut buf = raw;
    let mut forwarded = Vec::new();
    let mut count = 0;
    let ids = RequestIds::counting();
    while !buf.is_empty() {
        let Some(end) = head_end(buf, 0) else { return (forwarded, count, true) };
        let Ok(Some((len, mut req))) = parse_request(&buf[..end], peer, &untrusted, &ids, true) else {
            return (forwarded, count, true);
        };
        buf = &buf[len..];
        let Ok(n) = req.body.take(buf) else { return (forwarded, count, true) };
        if !req.body.is_done() && req.body != Body::None {
            // The body runs past the end of what was sent: incomplete, so refused here too.
            return (forwarded, count, true);
        }
        forwarded.extend_from_slice(&req.head);
        forwarded.extend_from_slice(&buf[..n]);
        buf = &buf[n..];
        count += 1;
    }
    (forwarded, count, false)
}

/// What hyper's HTTP/1 server makes of `raw` sent on one connection: the requests it read, and
/// whether the connection ended cleanly.
async fn hyper_frames(raw: Vec<u8>) -> (Vec<Seen>, bool) {
    let (mut client, server) = tokio::io::duplex(1 << 20);
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let svc = {
        let seen = seen.clone();
        hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            let seen = seen.clone();
            async move {
                let (parts, body) = req.into_parts();
                let body = body.collect().await?.to_bytes().to_vec();
                seen.lock().unwrap_or_else(|e| e.into_inner()).push((
                    parts.method.to_string(),
                    parts.uri.to_string(),
                    body,
                ));
                Ok::<_, hyper::Error>(hyper::Response::new(Full::new(Bytes::from_static(b"ok"))))
            }
        })
    };
    let conn = hyper::server::conn::http1::Builder::new()
        .half_close(true)
        .serve_connection(hyper_util::rt::TokioIo::new(server), svc);
    let talk = async move {
        // the server may close first: what it answered is compared below, not whether the client finished
        let _ = client.write_all(&raw).await;
        let _ = client.shutdown().await; // likewise: the server may be gone
        let mut sink = Vec::new();
        let _ = client.read_to_end(&mut sink).await; // likewise: a reset ends the read
    };
    let (served, ()) = tokio::join!(tokio::time::timeout(Duration::from_secs(5), conn), talk);
    let clean = matches!(served, Ok(Ok(())));
    let seen = seen.lock().unwrap_or_else(|e| e.into_inner()).clone();
    (seen, clean)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn the_front_frames_requests_as_hyper_does_or_refuses_them(reqs in proptest::collection::vec(request(), 1..4)) {
        let raw: Vec<u8> = reqs.iter().flat_map(Req::bytes).collect();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let (forwarded, count, refused) = front_frames(&raw);
        let (from_client, client_clean) = rt.block_on(hyper_frames(raw.clone()));
        let (from_front, front_clean) = rt.block_on(hyper_frames(forwarded));

        // What the front passed on is what hyper reads from it, request for request.
        prop_assert!(front_clean, "hyper could not read what the front passed on");
        prop_assert_eq!(from_front.len(), count);
        // Those requests are the ones hyper reads from the client's bytes, in order.
        let read = from_client.len();
        prop_assert!(read >= count, "the front passed on {} requests, hyper read {}", count, read);
        prop_assert_eq!(&from_front[..], &from_client[..count]);
        if !refused {
            // All accepted: hyper read exactly those, nothing more, and was content.
            prop_assert!(client_clean, "hyper refused what the front accepted");
            prop_assert_eq!(from_client.len(), count);
        }
    }
}
