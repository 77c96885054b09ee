//! The W3C Trace Context `traceparent` value (<https://www.w3.org/TR/trace-context/#traceparent-header>):
//! `{version}-{trace id}-{parent id}-{flags}`, e.g. `00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01`.
//!
//! Parsed and formatted here without OpenTelemetry, so every stage can read and write it: ingest stores it as the
//! record header [`TRACEPARENT_HEADER`], the job and sink runners continue the trace from it.

use std::fmt;

/// The record header (and HTTP header) that carries an event's trace context.
pub const TRACEPARENT_HEADER: &str = "traceparent";

/// One parsed `traceparent`: the trace, the span that is the parent of the next one, and the trace flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceParent {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    /// Bit 0 is `sampled`; the other bits are kept as received.
    pub flags: u8,
}

impl TraceParent {
    /// Length of a version-00 value.
    pub const LEN: usize = 55;

    /// Parses a value by the spec's rules: version `ff` and all-zero ids are invalid; a future version (not
    /// `00`) is read by its first four fields when followed by nothing or by `-`. `None` for anything invalid
    /// (the spec says to ignore it then, as if absent).
    pub fn parse(value: &[u8]) -> Option<TraceParent> {
        let value = value.trim_ascii();
        if value.len() < Self::LEN {
            return None;
        }
        let version = hex_u8(&value[0..2])?;
        if version == 0xff || (version == 0 && value.len() != Self::LEN) {
            return None;
        }
        if version != 0 && value.len() > Self::LEN && value[Self::LEN] != b'-' {
            return None;
        }
        if value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
            return None;
        }
        let mut trace_id = [0u8; 16];
        for (i, b) in trace_id.iter_mut().enumerate() {
            *b = hex_u8(&value[3 + 2 * i..5 + 2 * i])?;
        }
        let mut span_id = [0u8; 8];
        for (i, b) in span_id.iter_mut().enumerate() {
            *b = hex_u8(&value[36 + 2 * i..38 + 2 * i])?;
        }
        let flags = hex_u8(&value[53..55])?;
        if trace_id == [0; 16] || span_id == [0; 8] {
            return None;
        }
        Some(TraceParent { trace_id, span_id, flags })
    }

    /// The first valid `traceparent` among record headers, if any.
    pub fn from_headers<V: AsRef<[u8]>>(headers: &[(String, V)]) -> Option<TraceParent> {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(TRACEPARENT_HEADER))
            .and_then(|(_, v)| Self::parse(v.as_ref()))
    }

    /// Whether the caller recorded its span (the `sampled` flag).
    pub fn sampled(&self) -> bool {
        self.flags & 1 == 1
    }

    /// The trace id as 32 lowercase hex digits, as trace UIs show it.
    pub fn trace_id_hex(&self) -> String {
        hex(&self.trace_id)
    }
}

impl fmt::Display for TraceParent {
    /// Always version `00`, as the spec asks of a participant that continues a trace.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "00-{}-{}-{:02x}", hex(&self.trace_id), hex(&self.span_id), self.flags)
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// Two lowercase hex digits (the spec does not allow uppercase).
fn hex_u8(two: &[u8]) -> Option<u8> {
    let d = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    Some(d(two[0])? << 4 | d(two[1])?)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn parses_and_formats_the_spec_example() {
        let tp = TraceParent::parse(EXAMPLE.as_bytes()).unwrap();
        assert_eq!(tp.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(tp.span_id, [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7]);
        assert!(tp.sampled());
        assert_eq!(tp.to_string(), EXAMPLE);
        assert_eq!(tp.to_string().len(), TraceParent::LEN);
        let unsampled = TraceParent::parse(b" 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00 ").unwrap();
        assert!(!unsampled.sampled(), "surrounding whitespace is allowed, flags kept");
    }

    #[test]
    fn rejects_invalid_values() {
        for bad in [
            "",
            "00-1-2-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
        ] {
            assert_eq!(TraceParent::parse(bad.as_bytes()), None, "{bad}");
        }
    }

    #[test]
    fn future_versions_are_read_by_their_known_fields() {
        let tp = TraceParent::parse(b"cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future-holds");
        assert_eq!(tp.unwrap().to_string(), EXAMPLE, "continued as version 00");
    }

    #[test]
    fn found_among_record_headers() {
        let headers = vec![("x".to_string(), b"1".to_vec()), ("TraceParent".to_string(), EXAMPLE.as_bytes().to_vec())];
        assert_eq!(TraceParent::from_headers(&headers).unwrap().to_string(), EXAMPLE);
        assert_eq!(TraceParent::from_headers(&headers[..1]), None);
    }
}
