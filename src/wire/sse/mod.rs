//! Server-sent events as the providers send them: splitting a byte stream into raw events,
//! reading an event's fields, writing events, and recognising the events that end a stream.
//!
//! Raw events are kept byte-exact (terminating blank line included) because Holdfast replays
//! recorded streams verbatim; only [`parse_event`] interprets them.

use std::borrow::Cow;

use bytes::{Buf, Bytes, BytesMut};

mod ends;
pub use ends::{carries_content, carries_finish, error_event, is_usage_only, terminal_event};

/// Cuts an incoming byte stream into complete raw events as chunks arrive.
///
/// Network chunks do not respect event boundaries, so bytes are buffered until the blank line
/// that ends an event. Scanning resumes where the previous push stopped, so a large event that
/// trickles in byte by byte costs linear, not quadratic, time. The buffer is unbounded: callers
/// that face untrusted upstreams should cap [`SseSplitter::pending`]'s length.
#[derive(Debug, Default)]
pub struct SseSplitter {
    /// Bytes received and not yet returned as events.
    buf: BytesMut,
    /// Offset in `buf` up to which bytes have been scanned; never rescanned.
    scanned: usize,
    /// Offset in `buf` where the line being scanned starts.
    line_start: usize,
}

impl SseSplitter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends `chunk` and returns every event it completed, in order.
    ///
    /// Blank lines that precede an event are dropped: they dispatch nothing (WHATWG), and
    /// keeping them would yield "events" without a single field. Call [`SseSplitter::finish`]
    /// when the upstream closes.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<Bytes> {
        self.buf.extend_from_slice(chunk);
        let mut events = Vec::new();
        let mut i = self.scanned;
        loop {
            let next = self.buf.get(i..).and_then(|rest| rest.iter().position(|&b| b == b'\n' || b == b'\r'));
            let Some(offset) = next else {
                i = self.buf.len();
                break;
            };
            i += offset;
            let terminator_end = if self.buf.get(i) == Some(&b'\n') {
                i + 1
            } else {
                match self.buf.get(i + 1) {
                    Some(b'\n') => i + 2,
                    Some(_) => i + 1,
                    // A CR at the end may be the first half of a CRLF: decide when the next byte
                    // arrives, so the event's bytes do not depend on where chunks were cut.
                    None => break,
                }
            };
            if i != self.line_start {
                self.line_start = terminator_end;
                i = terminator_end;
                continue;
            }
            // An empty line: it ends the event, or is a stray blank line before one.
            if self.line_start == 0 {
                self.buf.advance(terminator_end);
            } else {
                events.push(self.buf.split_to(terminator_end).freeze());
            }
            i = 0;
            self.line_start = 0;
        }
        self.scanned = i;
        events
    }

    /// Call once the upstream closed: returns the last event if it was complete but held back
    /// because it ended in a lone CR (which could have been the start of a CRLF).
    pub fn finish(&mut self) -> Option<Bytes> {
        let cr = self.buf.len().checked_sub(1)?;
        if self.buf.get(cr) != Some(&b'\r') || cr != self.line_start {
            return None;
        }
        let event = (cr != 0).then(|| self.buf.split().freeze());
        self.buf.clear();
        self.scanned = 0;
        self.line_start = 0;
        event
    }

    /// Bytes received after the last complete event: non-empty at the end of a stream means
    /// the upstream stopped mid-event.
    pub fn pending(&self) -> &[u8] {
        &self.buf
    }
}

/// The fields of one event that matter to Holdfast.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field; `None` when absent or empty (browsers would call it "message").
    pub event: Option<String>,
    /// All `data:` lines joined with "\n"; empty for comment-only or keep-alive events.
    pub data: String,
}

/// Reads one raw event per the WHATWG rules. Invalid UTF-8 is replaced rather than rejected,
/// as browsers do, so a garbled event still parses (and then fails as JSON where it matters).
pub fn parse_event(raw: &[u8]) -> SseEvent {
    let text = String::from_utf8_lossy(raw);
    let mut rest = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let mut event = None;
    let mut data = String::new();
    let mut seen_line = false;
    loop {
        let (line, next) = match rest.find(['\r', '\n']) {
            Some(end) => {
                let skip = if rest[end..].starts_with("\r\n") { 2 } else { 1 };
                (&rest[..end], Some(&rest[end + skip..]))
            }
            None => (rest, None),
        };
        if line.is_empty() {
            if seen_line || next.is_none() {
                break;
            }
        } else {
            seen_line = true;
            // Comment lines (keep-alives) have an empty name; `id` and `retry` are
            // irrelevant to a recorded answer. Neither is read.
            let (name, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match name {
                "event" => event = (!value.is_empty()).then(|| value.to_owned()),
                "data" => {
                    data.push_str(value);
                    data.push('\n');
                }
                _ => {}
            }
        }
        match next {
            Some(next) => rest = next,
            None => break,
        }
    }
    if data.ends_with('\n') {
        data.pop();
    }
    SseEvent { event, data }
}

/// Writes one event with LF line endings. Line breaks inside `data` become separate `data:`
/// lines (a reader joins them back with "\n"; SSE cannot carry a CR). Line breaks in `event`
/// are dropped because they would forge extra fields.
pub fn format_event(event: Option<&str>, data: &str) -> Bytes {
    let mut out = String::with_capacity(data.len() + 32);
    if let Some(name) = event {
        out.push_str("event: ");
        out.extend(name.chars().filter(|c| !matches!(c, '\r' | '\n')));
        out.push('\n');
    }
    for line in data.split("\r\n").flat_map(|l| l.split(['\r', '\n'])) {
        out.push_str("data: ");
        out.push_str(line);
        out.push('\n');
    }
    out.push('\n');
    Bytes::from(out)
}

/// The streaming dialect of an endpoint; each marks the end of a stream differently.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamKind {
    ChatCompletions,
    Completions,
    Responses,
    Messages,
}

impl StreamKind {
    /// Ignores a query string and a trailing slash, which do not change the dialect.
    pub fn from_endpoint(path: &str) -> Option<StreamKind> {
        let path = path.split_once('?').map_or(path, |(p, _)| p);
        match path.strip_suffix('/').unwrap_or(path) {
            "/v1/chat/completions" => Some(StreamKind::ChatCompletions),
            "/v1/completions" => Some(StreamKind::Completions),
            "/v1/responses" => Some(StreamKind::Responses),
            "/v1/messages" => Some(StreamKind::Messages),
            _ => None,
        }
    }
}

/// The event's type: its `event:` field, else the `type` member of its JSON data. The fallback
/// matters for relays (some gateways) that drop `event:` lines.
pub fn event_type(event: &SseEvent) -> Option<Cow<'_, str>> {
    if let Some(name) = &event.event {
        return Some(Cow::Borrowed(name));
    }
    if !event.data.contains("\"type\"") {
        return None;
    }
    match serde_json::from_str::<serde_json::Value>(&event.data) {
        Ok(serde_json::Value::Object(mut map)) => match map.remove("type") {
            Some(serde_json::Value::String(t)) => Some(Cow::Owned(t)),
            _ => None,
        },
        _ => None,
    }
}

/// Whether `event` is the provider's last word: a stream without one was cut short and must
/// not be stored as an answer. Being last is not being complete: `response.incomplete` ends a
/// Responses stream cleanly (the client gets it as it came), but its answer stopped early
/// (token limit, content filter), and `exchange::store_record` refuses to keep it.
pub fn is_terminal(kind: StreamKind, event: &SseEvent) -> bool {
    match kind {
        StreamKind::ChatCompletions | StreamKind::Completions => event.data.trim() == "[DONE]",
        StreamKind::Messages => event_type(event).as_deref() == Some("message_stop"),
        StreamKind::Responses => matches!(
            event_type(event).as_deref(),
            Some("response.completed" | "response.failed" | "response.incomplete")
        ),
    }
}

/// Whether `event` reports a failure: a stream carrying one is not an answer worth keeping,
/// even when it ends with a terminal event.
pub fn is_error_event(kind: StreamKind, event: &SseEvent) -> bool {
    if event.event.as_deref() == Some("error") {
        return true;
    }
    match kind {
        // OpenAI reports mid-stream failures as a data object with an `error` member.
        StreamKind::ChatCompletions | StreamKind::Completions => {
            event.data.contains("\"error\"")
                && serde_json::from_str::<serde_json::Value>(&event.data)
                    .is_ok_and(|v| v.get("error").is_some_and(|e| !e.is_null()))
        }
        StreamKind::Messages => event_type(event).as_deref() == Some("error"),
        StreamKind::Responses => matches!(event_type(event).as_deref(), Some("error" | "response.failed")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LF_STREAM: &[u8] = b"event: message_start\ndata: {\"type\":\"message_start\"}\n\n: keep-alive\n\n\
        data: {\"a\":1}\ndata: {\"b\":2}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";

    fn with_endings(stream: &[u8], ending: &str) -> Vec<u8> {
        String::from_utf8(stream.to_vec()).unwrap().replace('\n', ending).into_bytes()
    }

    fn split_all(chunks: &[&[u8]]) -> (Vec<Bytes>, SseSplitter) {
        let mut splitter = SseSplitter::new();
        let mut events: Vec<Bytes> = chunks.iter().flat_map(|c| splitter.push(c)).collect();
        events.extend(splitter.finish());
        (events, splitter)
    }

    #[test]
    fn splits_events_in_one_chunk_keeping_their_bytes() {
        let (events, splitter) = split_all(&[LF_STREAM]);
        let expected: Vec<&[u8]> = vec![
            b"event: message_start\ndata: {\"type\":\"message_start\"}\n\n",
            b": keep-alive\n\n",
            b"data: {\"a\":1}\ndata: {\"b\":2}\n\n",
            b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
        ];
        assert_eq!(events, expected);
        assert!(splitter.pending().is_empty());
        assert_eq!(events.concat(), LF_STREAM);
    }

    #[test]
    fn every_split_point_gives_the_same_events_for_every_line_ending() {
        for ending in ["\n", "\r\n", "\r"] {
            let stream = with_endings(LF_STREAM, ending);
            let (whole, _) = split_all(&[&stream]);
            assert_eq!(whole.len(), 4, "ending {ending:?}");
            assert_eq!(whole.concat(), stream);
            for cut in 0..=stream.len() {
                let (events, splitter) = split_all(&[&stream[..cut], &stream[cut..]]);
                assert_eq!(events, whole, "ending {ending:?}, cut at {cut}");
                assert!(splitter.pending().is_empty());
            }
            for (a, b) in [(1, 7), (5, 40), (20, 21), (60, 90)] {
                let (events, _) = split_all(&[&stream[..a], &stream[a..b], &stream[b..]]);
                assert_eq!(events, whole, "ending {ending:?}, cuts {a},{b}");
            }
            let bytes: Vec<&[u8]> = stream.chunks(1).collect();
            assert_eq!(split_all(&bytes).0, whole, "byte by byte, ending {ending:?}");
        }
    }

    #[test]
    fn crlf_halves_across_chunks_stay_in_their_event() {
        let mut splitter = SseSplitter::new();
        assert!(splitter.push(b"data: x\r\n\r").is_empty());
        assert_eq!(splitter.push(b"\ndata: y\r\n\r\n"), vec![&b"data: x\r\n\r\n"[..], b"data: y\r\n\r\n"]);
        // A lone CR terminator is only known to be complete once the stream ends.
        assert!(splitter.push(b"data: [DONE]\r\r").is_empty());
        assert_eq!(splitter.finish().as_deref(), Some(&b"data: [DONE]\r\r"[..]));
        assert!(splitter.pending().is_empty());
    }

    #[test]
    fn mixed_endings_and_leading_blank_lines() {
        let (events, _) = split_all(&[b"\n\r\n\rdata: a\r\n\ndata: b\n\r\n\n\ndata: c\r\r"]);
        assert_eq!(events, vec![&b"data: a\r\n\n"[..], b"data: b\n\r\n", b"data: c\r\r"]);
    }

    #[test]
    fn incomplete_tail_stays_pending() {
        let mut splitter = SseSplitter::new();
        assert_eq!(splitter.push(b"data: 1\n\ndata: {\"par").len(), 1);
        assert_eq!(splitter.pending(), b"data: {\"par");
        assert!(splitter.push(b"tial\":true}\n").is_empty());
        assert_eq!(splitter.finish(), None);
        assert_eq!(splitter.pending(), b"data: {\"partial\":true}\n");
    }

    #[test]
    fn large_event_fed_byte_by_byte_is_linear() {
        let mut event = b"data: ".to_vec();
        event.extend(std::iter::repeat_n(b'x', 400_000));
        event.extend(b"\n\n");
        let mut splitter = SseSplitter::new();
        let started = std::time::Instant::now();
        let mut events = Vec::new();
        for byte in event.chunks(1) {
            events.extend(splitter.push(byte));
        }
        assert_eq!(events, vec![Bytes::from(event)]);
        // Quadratic rescanning would take minutes here.
        assert!(started.elapsed().as_secs() < 10);
    }

    #[test]
    fn parses_fields_per_whatwg() {
        let ev = parse_event(b"event: content_block_delta\ndata: {\"x\":1}\n\n");
        assert_eq!(ev, SseEvent { event: Some("content_block_delta".into()), data: "{\"x\":1}".into() });
        let ev =
            parse_event(b": comment\r\nid: 7\r\nretry: 10\r\ndata:no-space\r\ndata:  two\r\ndata\r\nfoo: bar\r\n\r\n");
        assert_eq!(ev, SseEvent { event: None, data: "no-space\n two\n".into() });
        let ev = parse_event(b"\xef\xbb\xbfevent:ping\rdata: a\r\rdata: ignored, next event\r\r");
        assert_eq!(ev, SseEvent { event: Some("ping".into()), data: "a".into() });
        assert_eq!(parse_event(b": keep-alive\n\n"), SseEvent::default());
        assert_eq!(parse_event(b"event:\ndata: x"), SseEvent { event: None, data: "x".into() });
        assert_eq!(parse_event(b"data: \xff\n\n").data, "\u{fffd}");
        assert_eq!(parse_event(b"\n\ndata: after blank\n\n").data, "after blank");
    }

    #[test]
    fn format_round_trips_through_parse() {
        assert_eq!(&format_event(Some("message_stop"), "{}")[..], b"event: message_stop\ndata: {}\n\n");
        assert_eq!(&format_event(None, "[DONE]")[..], b"data: [DONE]\n\n");
        assert_eq!(&format_event(None, "a\nb\r\nc\rd")[..], b"data: a\ndata: b\ndata: c\ndata: d\n\n");
        assert_eq!(&format_event(Some("x\ny"), "")[..], b"event: xy\ndata: \n\n");
        for data in ["", "one", "two\nlines", " leading space", "\n", "{\"k\":\"v\"}"] {
            let raw = format_event(Some("t"), data);
            assert_eq!(parse_event(&raw), SseEvent { event: Some("t".into()), data: data.into() });
            assert_eq!(split_all(&[&raw]).0, vec![raw.clone()]);
        }
    }

    #[test]
    fn endpoints_map_to_kinds() {
        assert_eq!(StreamKind::from_endpoint("/v1/chat/completions"), Some(StreamKind::ChatCompletions));
        assert_eq!(StreamKind::from_endpoint("/v1/completions"), Some(StreamKind::Completions));
        assert_eq!(StreamKind::from_endpoint("/v1/responses"), Some(StreamKind::Responses));
        assert_eq!(StreamKind::from_endpoint("/v1/messages?beta=true"), Some(StreamKind::Messages));
        assert_eq!(StreamKind::from_endpoint("/v1/messages/"), Some(StreamKind::Messages));
        assert_eq!(StreamKind::from_endpoint("/v1/messages/count_tokens"), None);
        assert_eq!(StreamKind::from_endpoint("/v1/embeddings"), None);
    }

    fn ev(event: Option<&str>, data: &str) -> SseEvent {
        SseEvent { event: event.map(str::to_owned), data: data.to_owned() }
    }

    #[test]
    fn terminal_events_per_kind() {
        use StreamKind::*;
        assert!(is_terminal(ChatCompletions, &ev(None, "[DONE]")));
        assert!(is_terminal(Completions, &ev(None, "[DONE]")));
        assert!(!is_terminal(ChatCompletions, &ev(None, "{\"choices\":[]}")));
        assert!(!is_terminal(Messages, &ev(None, "[DONE]")));
        assert!(is_terminal(Messages, &ev(Some("message_stop"), "{\"type\":\"message_stop\"}")));
        assert!(is_terminal(Messages, &ev(None, "{\"type\":\"message_stop\"}")));
        assert!(!is_terminal(Messages, &ev(Some("message_delta"), "{\"type\":\"message_delta\"}")));
        for t in ["response.completed", "response.failed", "response.incomplete"] {
            assert!(is_terminal(Responses, &ev(Some(t), "{}")), "{t}");
            assert!(is_terminal(Responses, &ev(None, &format!("{{\"type\":\"{t}\",\"sequence_number\":9}}"))));
        }
        assert!(!is_terminal(Responses, &ev(Some("response.output_text.done"), "{}")));
        assert!(!is_terminal(Responses, &ev(None, "not json \"type\"")));
    }

    #[test]
    fn error_events_per_kind() {
        use StreamKind::*;
        let overloaded = "{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}";
        assert!(is_error_event(Messages, &ev(Some("error"), overloaded)));
        assert!(is_error_event(Messages, &ev(None, overloaded)));
        assert!(!is_error_event(Messages, &ev(Some("ping"), "{\"type\": \"ping\"}")));
        assert!(is_error_event(Responses, &ev(Some("response.failed"), "{}")));
        assert!(is_error_event(Responses, &ev(None, "{\"type\":\"error\",\"code\":\"server_error\"}")));
        assert!(!is_error_event(Responses, &ev(Some("response.completed"), "{}")));
        assert!(!is_error_event(Responses, &ev(Some("response.incomplete"), "{}")), "an answer, not a failure");
        assert!(is_error_event(ChatCompletions, &ev(None, "{\"error\":{\"message\":\"boom\"}}")));
        assert!(!is_error_event(ChatCompletions, &ev(None, "{\"error\":null,\"choices\":[]}")));
        assert!(!is_error_event(
            ChatCompletions,
            &ev(None, "{\"choices\":[{\"delta\":{\"content\":\"\\\"error\\\"\"}}]}")
        ));
        assert!(!is_error_event(Completions, &ev(None, "[DONE]")));
    }

    #[test]
    fn garbage_never_panics() {
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let alphabet = b"\r\n:data event \xff\xfe{}\"[DONE]";
        for _ in 0..300 {
            let len = (next() % 200) as usize;
            let bytes: Vec<u8> = (0..len).map(|_| alphabet[(next() % alphabet.len() as u64) as usize]).collect();
            let mut splitter = SseSplitter::new();
            let mut seen = Vec::new();
            for chunk in bytes.chunks(1 + (next() % 9) as usize) {
                seen.extend(splitter.push(chunk));
            }
            seen.extend(splitter.finish());
            seen.push(Bytes::copy_from_slice(splitter.pending()));
            for raw in &seen {
                let event = parse_event(raw);
                for kind in
                    [StreamKind::ChatCompletions, StreamKind::Completions, StreamKind::Responses, StreamKind::Messages]
                {
                    let _ = (is_terminal(kind, &event), is_error_event(kind, &event));
                }
            }
        }
    }
}
