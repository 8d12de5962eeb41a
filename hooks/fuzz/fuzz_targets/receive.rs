//! Any bytes, read as a delivery: no panic, and a push only ever means "the watched branch
//! moved to a real commit".
//!
//! Input layout, simple enough for the fuzzer to learn: byte 0 picks the provider, byte 1
//! whether to sign the body (so most runs get past the signature to the parsers) and add
//! the host's push event header; then `Name: value` lines, a blank line, and the body.

#![no_main]

use hooks::{Headers, Outcome, Provider};
use libfuzzer_sys::fuzz_target;

const SECRET: &[u8] = b"fuzz-secret";

fuzz_target!(|data: &[u8]| {
    let [pick, flags, rest @ ..] = data else { return };
    let provider = match pick % 4 {
        0 => Provider::GitHub,
        1 => Provider::GitLab,
        2 => Provider::Gitea,
        _ => Provider::Generic { header: "X-Signature".into() },
    };
    let (head, body) = match rest.windows(2).position(|w| w == b"\n\n") {
        Some(at) => (&rest[..at], &rest[at + 2..]),
        None => (&rest[..0], rest),
    };

    let mut fields: Vec<(&str, &[u8])> = head
        .split(|&b| b == b'\n')
        .filter_map(|line| {
            let colon = line.iter().position(|&b| b == b':')?;
            let name = std::str::from_utf8(&line[..colon]).ok()?;
            Some((name, &line[colon + 1..]))
        })
        .collect();
    let (name, signature) = provider.sign(SECRET, body);
    if flags & 1 == 1 {
        fields.push((name, &signature));
    }
    if flags & 2 == 2
        && let Some((name, value)) = provider.push_event_header()
    {
        fields.push((name, value.as_bytes()));
    }
    let headers: Headers<'_> = fields.into_iter().collect();

    match hooks::receive(&provider, SECRET, &headers, body, "main") {
        Ok(Outcome::Push(push)) => {
            assert_eq!(push.git_ref, "refs/heads/main");
            assert!(!push.after.is_zero());
        }
        Ok(_) => {}
        Err(rejection) => {
            // Messages must stay printable whatever came in.
            let _ = rejection.to_string();
        }
    }
});
