//! Server-Sent Events, read: the agent's deploy event and log streams arrive as `event:` and
//! `data:` lines, one blank line after each message. Pure: bytes in, messages out.

/// One message of a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The `event:` field (`message` when absent, as the spec says).
    pub event: String,
    /// The `data:` lines, joined by newlines.
    pub data: String,
}

/// Collects bytes as they arrive (split anywhere, even inside a character) into messages.
#[derive(Debug, Default)]
pub struct Parser {
    pending: Vec<u8>,
    event: Option<String>,
    data: Vec<String>,
}

impl Parser {
    /// Feeds a chunk; answers the messages it completed.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<Message> {
        self.pending.extend_from_slice(chunk);
        let mut out = Vec::new();
        while let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
            let raw: Vec<u8> = self.pending.drain(..=end).collect();
            let line = String::from_utf8_lossy(&raw[..raw.len() - 1]);
            let line = line.strip_suffix('\r').unwrap_or(&line);
            if line.is_empty() {
                let event = self.event.take();
                if !self.data.is_empty() {
                    out.push(Message { event: event.unwrap_or_else(|| "message".into()), data: self.data.join("\n") });
                }
                self.data.clear();
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "event" => self.event = Some(value.to_owned()),
                "data" => self.data.push(value.to_owned()),
                _ => {}
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_survive_any_split() {
        let stream =
            "event: event\nid: 1\ndata: {\"a\":\"é\"}\n\n: keep-alive\n\nevent: end\r\ndata: x\r\ndata: y\r\n\r\n";
        let whole = Parser::default().push(stream.as_bytes());
        assert_eq!(
            whole,
            [
                Message { event: "event".into(), data: "{\"a\":\"é\"}".into() },
                Message { event: "end".into(), data: "x\ny".into() },
            ]
        );
        for cut in 0..stream.len() {
            let mut p = Parser::default();
            let mut got = p.push(&stream.as_bytes()[..cut]);
            got.extend(p.push(&stream.as_bytes()[cut..]));
            assert_eq!(got, whole, "cut at {cut}");
        }
    }
}
