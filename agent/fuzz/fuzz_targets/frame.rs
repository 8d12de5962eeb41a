//! Any bytes, framed as the `http` front frames a client connection (and as a worker's
//! answer): no panic, and every head a worker would get is complete CRLF HTTP/1.1. The input
//! layout is `agent::fuzz_frame`'s: piece size, trusted-proxy flag, then the stream.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    agent::fuzz_frame(data);
});
