//! Turning a request body into log records: JSON array or NDJSON, the request limits, and per-event validation.
//!
//! Values are not re-serialized: a record's value is a zero-copy slice of the request body holding the event's
//! `value` exactly as sent.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use bytes::Bytes;
use serde::Deserialize;
use serde::de::{self, SeqAccess, Visitor};
use serde_json::value::RawValue;
use sluice_config::Limits;
use sluice_log::Record;
use sluice_telemetry::trace::{self, TRACEPARENT_HEADER, TraceParent};

use crate::error::ApiError;
use crate::schemas::Binding;

/// One event as posted to `POST /v1/topics/{topic}/events`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventIn<'a> {
    #[serde(borrow)]
    value: &'a RawValue,
    #[serde(default, borrow, deserialize_with = "de_key")]
    key: Option<KeyIn<'a>>,
    #[serde(default, borrow, deserialize_with = "de_timestamp")]
    timestamp: Option<TimestampIn<'a>>,
    #[serde(default)]
    headers: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum KeyIn<'a> {
    Str(#[serde(borrow)] Cow<'a, str>),
    Int(i64),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum TimestampIn<'a> {
    Millis(i64),
    Text(#[serde(borrow)] Cow<'a, str>),
}

fn de_key<'de: 'a, 'a, D: de::Deserializer<'de>>(d: D) -> Result<Option<KeyIn<'a>>, D::Error> {
    Option::<KeyIn>::deserialize(d).map_err(|_| de::Error::custom("`key` must be a string or an integer"))
}

fn de_timestamp<'de: 'a, 'a, D: de::Deserializer<'de>>(d: D) -> Result<Option<TimestampIn<'a>>, D::Error> {
    Option::<TimestampIn>::deserialize(d)
        .map_err(|_| de::Error::custom("`timestamp` must be RFC 3339 text or epoch milliseconds"))
}

/// Parses a request body into records: a JSON array when it starts with `[`, else NDJSON (one event per
/// non-blank line). Request-level problems (limits, invalid JSON) fail the whole request; an event that is valid
/// JSON but not a valid event gets its own error.
///
/// With a `binding` (a schema-bound topic) each value is validated against the schema and stored as
/// Confluent-framed Avro; otherwise it must be a JSON object and is stored as sent.
pub fn parse_body(
    body: &Bytes,
    limits: &Limits,
    now_ms: i64,
    binding: Option<&Binding>,
) -> Result<Vec<Result<Record, ApiError>>, ApiError> {
    let ctx = Ctx { body, limits, now_ms, binding };
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    let events = match first {
        None => return Err(ApiError::bad_request("empty_body", "request body has no events")),
        Some(b'[') => {
            let raws = split_array(body, limits.max_events_per_request)?;
            let mut out = Vec::with_capacity(raws.len());
            for (i, raw) in raws.into_iter().enumerate() {
                check_depth(i, raw.get().as_bytes(), limits)?;
                out.push(event_from(i, serde_json::from_str(raw.get()), &ctx)?);
            }
            out
        }
        Some(_) => parse_ndjson(&ctx)?,
    };
    if events.is_empty() {
        return Err(ApiError::bad_request("empty_body", "request body has no events"));
    }
    Ok(events)
}

/// Content type of a body of records already in the Confluent wire format. Per record: key length (4 bytes,
/// big-endian; `0xFFFFFFFF` for no key), key bytes, value length (4 bytes), value (magic byte 0, schema id, Avro).
pub const FRAMED_AVRO: &str = "application/vnd.sluice.avro";

/// Splits a [`FRAMED_AVRO`] body into records. Broken framing fails the request; `check` validates each value
/// (a value that does not decode gets its own error).
pub fn parse_framed(
    body: &Bytes,
    limits: &Limits,
    now_ms: i64,
    mut check: impl FnMut(usize, &[u8]) -> Result<(), ApiError>,
) -> Result<Vec<Result<Record, ApiError>>, ApiError> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    let framing = |index: usize, pos: usize, what: &str| {
        ApiError::bad_request("invalid_framing", format!("record {index} at byte {pos}: {what}"))
    };
    let take_len = |pos: &mut usize, index: usize| -> Result<u32, ApiError> {
        let b = body.get(*pos..*pos + 4).ok_or_else(|| framing(index, *pos, "truncated length"))?;
        *pos += 4;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    };
    while pos < body.len() {
        let index = out.len();
        if index == limits.max_events_per_request {
            return Err(too_many(limits.max_events_per_request));
        }
        let key = match take_len(&mut pos, index)? {
            u32::MAX => None,
            n => {
                let k = body.get(pos..pos + n as usize).ok_or_else(|| framing(index, pos, "truncated key"))?;
                pos += n as usize;
                Some(body.slice_ref(k))
            }
        };
        let n = take_len(&mut pos, index)? as usize;
        let value = body.get(pos..pos + n).ok_or_else(|| framing(index, pos, "truncated value"))?;
        pos += n;
        let record = Record { timestamp: now_ms, key, headers: Vec::new(), value: body.slice_ref(value) };
        check_size(index, &record, limits)?;
        out.push(check(index, value).map(|()| record));
    }
    if out.is_empty() {
        return Err(ApiError::bad_request("empty_body", "request body has no events"));
    }
    Ok(out)
}

fn check_depth(index: usize, json: &[u8], limits: &Limits) -> Result<(), ApiError> {
    let depth = json_depth(json);
    if depth > limits.max_json_depth {
        return Err(ApiError::bad_request(
            "json_too_deep",
            format!(
                "event {index} nests {depth} levels deep, over the limit of {} (limits.max_json_depth)",
                limits.max_json_depth
            ),
        ));
    }
    Ok(())
}

const TOO_MANY: &str = "sluice: too many events";

fn too_many(max: usize) -> ApiError {
    ApiError::payload_too_large(
        "too_many_events",
        format!("request has more than {max} events (limits.max_events_per_request)"),
    )
}

fn invalid_json(e: &serde_json::Error, line_offset: usize) -> ApiError {
    ApiError::bad_request(
        "invalid_json",
        format!("invalid JSON at line {} column {}: {}", e.line() + line_offset, e.column(), serde_reason(e)),
    )
}

/// serde_json's message without its " at line L column C" suffix.
fn serde_reason(e: &serde_json::Error) -> String {
    let msg = e.to_string();
    msg.split(" at line ").next().unwrap_or(&msg).to_string()
}

fn split_array(body: &[u8], max: usize) -> Result<Vec<&RawValue>, ApiError> {
    struct Events(usize);
    impl<'de> Visitor<'de> for Events {
        type Value = Vec<&'de RawValue>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a JSON array of events")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(self.0).min(1024));
            while let Some(v) = seq.next_element::<&'de RawValue>()? {
                if out.len() == self.0 {
                    // Stop before buffering more than the limit.
                    return Err(de::Error::custom(TOO_MANY));
                }
                out.push(v);
            }
            Ok(out)
        }
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let events = de::Deserializer::deserialize_seq(&mut de, Events(max)).and_then(|v| de.end().map(|()| v));
    events.map_err(|e| if e.to_string().starts_with(TOO_MANY) { too_many(max) } else { invalid_json(&e, 0) })
}

/// One pass per line: a syntax error is the request's (with its line), a data error is the event's.
/// What every event of one request is parsed with.
struct Ctx<'a> {
    body: &'a Bytes,
    limits: &'a Limits,
    now_ms: i64,
    binding: Option<&'a Binding>,
}

fn parse_ndjson(ctx: &Ctx) -> Result<Vec<Result<Record, ApiError>>, ApiError> {
    let (body, limits) = (ctx.body, ctx.limits);
    let mut out = Vec::new();
    for (line_no, line) in body.split(|&b| b == b'\n').enumerate() {
        if line.iter().all(|b| b.is_ascii_whitespace()) {
            continue;
        }
        if out.len() == limits.max_events_per_request {
            return Err(too_many(limits.max_events_per_request));
        }
        let index = out.len();
        check_depth(index, line, limits)?;
        let parsed = serde_json::from_slice::<EventIn>(line);
        if let Err(e) = &parsed
            && (e.is_syntax() || e.is_eof())
        {
            return Err(invalid_json(e, line_no));
        }
        out.push(event_from(index, parsed, ctx)?);
    }
    Ok(out)
}

/// Deepest nesting of arrays and objects in a JSON text (already known to be valid).
pub fn json_depth(json: &[u8]) -> usize {
    let (mut depth, mut max, mut in_str, mut escaped) = (0usize, 0usize, false, false);
    for &b in json {
        if in_str {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_str = false;
            }
            continue;
        }
        match b {
            b'"' => in_str = true,
            b'{' | b'[' => {
                depth += 1;
                max = max.max(depth);
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// Builds the record of one parsed event. An oversized event fails the whole request (`Err`); an invalid one
/// only itself (`Ok(Err)`). `body` is the buffer the event borrows from.
fn event_from(
    index: usize,
    parsed: serde_json::Result<EventIn>,
    ctx: &Ctx,
) -> Result<Result<Record, ApiError>, ApiError> {
    let invalid = |msg: String| Ok(Err(ApiError::bad_request("invalid_event", format!("event {index}: {msg}"))));
    let ev = match parsed {
        Ok(ev) => ev,
        Err(e) => return invalid(serde_reason(&e)),
    };
    let raw_value = ev.value.get();
    let value = match ctx.binding {
        Some(b) => {
            // Avro is smaller than its JSON; the header is 5 bytes.
            let mut framed = Vec::with_capacity(raw_value.len() + sluice_avro::wire::HEADER_LEN);
            if let Err(e) = b.encode(raw_value.as_bytes(), &mut framed) {
                let msg = format!("event {index}: does not match schema id {}: {e}", b.schema.id);
                return Ok(Err(ApiError::bad_request("schema_violation", msg)));
            }
            Bytes::from(framed)
        }
        None if !raw_value.starts_with('{') => return invalid("`value` must be a JSON object".into()),
        None => slice_of(ctx.body, raw_value.as_bytes()),
    };
    let key = ev.key.map(|k| match k {
        KeyIn::Str(s) => Bytes::copy_from_slice(s.as_bytes()),
        KeyIn::Int(n) => Bytes::from(n.to_string()),
    });
    let timestamp = match ev.timestamp {
        None => ctx.now_ms,
        Some(TimestampIn::Millis(ms)) => ms,
        Some(TimestampIn::Text(s)) => match chrono::DateTime::parse_from_rfc3339(&s) {
            Ok(t) => t.timestamp_millis(),
            Err(e) => return invalid(format!("`timestamp` \"{s}\" is not RFC 3339 or epoch milliseconds: {e}")),
        },
    };
    let headers: Vec<(String, Bytes)> =
        ev.headers.unwrap_or_default().into_iter().map(|(k, v)| (k, Bytes::from(v))).collect();
    let record = Record { timestamp, key, headers, value };
    check_size(index, &record, ctx.limits)?;
    Ok(Ok(record))
}

/// Rejects an event over `limits.max_event_bytes` (counted as key + value + headers, as Kafka does).
pub fn check_size(index: usize, record: &Record, limits: &Limits) -> Result<(), ApiError> {
    let size = record.key.as_ref().map_or(0, |k| k.len())
        + record.value.len()
        + record.headers.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>();
    if size as u64 > limits.max_event_bytes.0 {
        return Err(ApiError::payload_too_large(
            "event_too_large",
            format!(
                "event {index} is {size} bytes, over the limit of {} bytes (limits.max_event_bytes)",
                limits.max_event_bytes.0
            ),
        ));
    }
    Ok(())
}

/// The span of one produce request (`ingest`), continuing the request's W3C `traceparent` header when it has a
/// valid one. Returns that header too: [`propagate_trace`] stores it with the events.
pub fn request_span(topic: &str, headers: &axum::http::HeaderMap) -> (tracing::Span, Option<TraceParent>) {
    let span = tracing::info_span!("ingest", topic = %topic, trace_id = tracing::field::Empty);
    let incoming = headers.get(TRACEPARENT_HEADER).and_then(|v| TraceParent::parse(v.as_bytes()));
    if let Some(tp) = &incoming {
        trace::set_parent(&span, tp);
    }
    (span, incoming)
}

/// Stores each event's trace context as its `traceparent` record header, so the job and sink runners continue
/// the trace. An event with its own valid `traceparent` header keeps its trace (and, while spans are exported and
/// it is sampled, gets an `ingest.event` span under it whose id replaces the header's parent); any other event
/// gets the request's: the `ingest` span when it is recorded (a sampled incoming trace, or a new trace sampled at
/// `tracing.sample_ratio`), else the incoming header as received. Events of an unsampled request without a
/// header of their own get none, so they cost nothing downstream.
///
/// Returns the `ingest.event` spans: hold them until the events are durable.
pub fn propagate_trace<'a>(
    span: &tracing::Span,
    incoming: Option<TraceParent>,
    records: impl Iterator<Item = &'a mut Record>,
) -> Vec<tracing::Span> {
    let exporting = trace::exporting();
    let request = if exporting { trace::traceparent_of(span).or(incoming) } else { incoming };
    if let Some(tp) = &request {
        span.record("trace_id", tp.trace_id_hex());
    }
    let request = request.map(|tp| Bytes::from(tp.to_string()));
    let mut event_spans = Vec::new();
    for record in records {
        let own = record.headers.iter_mut().find(|(k, _)| k.eq_ignore_ascii_case(TRACEPARENT_HEADER));
        match own {
            Some((_, value)) => {
                if exporting && let Some(tp) = TraceParent::parse(value).filter(TraceParent::sampled) {
                    let event = tracing::info_span!(parent: span, "ingest.event");
                    trace::set_parent(&event, &tp);
                    trace::add_link(span, &tp);
                    if let Some(own) = trace::traceparent_of(&event) {
                        *value = Bytes::from(own.to_string());
                    }
                    event_spans.push(event);
                }
            }
            None => {
                if let Some(tp) = &request {
                    record.headers.push((TRACEPARENT_HEADER.to_string(), tp.clone()));
                }
            }
        }
    }
    event_spans
}

/// A zero-copy `Bytes` for `part` when it lies inside `body`, else a copy.
pub fn slice_of(body: &Bytes, part: &[u8]) -> Bytes {
    let (start, end) = (body.as_ptr() as usize, body.as_ptr() as usize + body.len());
    let p = part.as_ptr() as usize;
    if p >= start && p + part.len() <= end { body.slice_ref(part) } else { Bytes::copy_from_slice(part) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits::default()
    }

    fn parse(body: &'static [u8], l: &Limits) -> Result<Vec<Result<Record, ApiError>>, ApiError> {
        parse_body(&Bytes::from_static(body), l, 5, None)
    }

    fn one(body: &'static [u8]) -> Result<Record, ApiError> {
        parse(body, &limits()).unwrap().remove(0)
    }

    #[test]
    fn parses_arrays_and_ndjson() {
        let a = parse(br#" [{"value":{}}, {"value":{"a":[1,2]}}] "#, &limits()).unwrap();
        assert_eq!(a.len(), 2);
        let n = parse(b"{\"value\":{}}\n\n{\"value\":{\"b\":1}}\n", &limits()).unwrap();
        assert_eq!(n.len(), 2);
        assert_eq!(n[1].as_ref().unwrap().value, Bytes::from_static(b"{\"b\":1}"));
    }

    #[test]
    fn invalid_json_names_line_and_column() {
        let e = parse(b"{\"value\":{}}\n{\"value\":{]}\n", &limits()).unwrap_err();
        assert_eq!(e.code, "invalid_json");
        assert!(e.message.contains("line 2 column"), "{}", e.message);
        let e = parse(b"[\n{\"value\":{}},\n{\"value\" {}}]", &limits()).unwrap_err();
        assert!(e.message.contains("line 3 column 10"), "{}", e.message);
        let e = parse(b"{\"value\":{}", &limits()).unwrap_err();
        assert_eq!(e.code, "invalid_json", "a truncated line is the request's error");
    }

    #[test]
    fn limits_count_and_depth() {
        let l = Limits { max_events_per_request: 2, max_json_depth: 4, ..limits() };
        let e = parse(br#"[{"value":{}},{"value":{}},{"value":{}}]"#, &l).unwrap_err();
        assert_eq!(e.code, "too_many_events");
        let e = parse(b"{\"value\":{}}\n{\"value\":{}}\n{\"value\":{}}", &l).unwrap_err();
        assert_eq!(e.code, "too_many_events");
        assert!(parse(br#"{"value":{"a":{"b":[]}}}"#, &l).is_ok());
        for body in [&br#"{"value":{"a":{"b":[[]]}}}"#[..], br#"[{"value":{"a":{"b":[[]]}}}]"#] {
            let e = parse_body(&Bytes::from_static(body), &l, 0, None).unwrap_err();
            assert_eq!(e.code, "json_too_deep");
            assert!(e.message.contains("limits.max_json_depth"));
        }
    }

    #[test]
    fn depth_ignores_brackets_in_strings() {
        assert_eq!(json_depth(br#"{"a":"{{[[\"]]"}"#), 1);
        assert_eq!(json_depth(br#"[[{"a":[]}]]"#), 4);
    }

    #[test]
    fn parses_events() {
        let r = one(br#"{"value":{"x":1},"key":"k1","timestamp":"2026-01-02T03:04:05.678Z","headers":{"traceparent":"00-1-2-01"}}"#)
            .unwrap();
        assert_eq!(r.value, Bytes::from_static(br#"{"x":1}"#));
        assert_eq!(r.key.as_deref(), Some(&b"k1"[..]));
        assert_eq!(r.timestamp, 1767323045678);
        assert_eq!(r.headers[0].0, "traceparent");
        let r = one(br#"{"value":{},"key":42,"timestamp":1000}"#).unwrap();
        assert_eq!((r.key.as_deref(), r.timestamp), (Some(&b"42"[..]), 1000));
        assert_eq!(one(br#"{"value":{}}"#).unwrap().timestamp, 5, "defaults to ingest time");
    }

    #[test]
    fn rejects_bad_events_individually() {
        for (body, needle) in [
            (&br#"{"value":[1]}"#[..], "must be a JSON object"),
            (br#"{"key":"k"}"#, "missing field `value`"),
            (br#"{"value":{},"timestamp":"yesterday"}"#, "not RFC 3339"),
            (br#"{"value":{},"timestamp":true}"#, "`timestamp` must be"),
            (br#"{"value":{},"color":"red"}"#, "unknown field `color`"),
            (br#"{"value":{},"key":{"a":1}}"#, "`key` must be a string or an integer"),
            (br#"[1]"#, "invalid type"),
        ] {
            let mut all = parse_body(&Bytes::from_static(body), &limits(), 0, None).unwrap();
            let e = all.remove(0).unwrap_err();
            assert_eq!(e.code, "invalid_event");
            assert!(e.message.starts_with("event 0: ") && e.message.contains(needle), "{}", e.message);
        }
        let mixed = parse(b"{\"value\":{}}\n{\"value\":7}\n{\"value\":{}}", &limits()).unwrap();
        assert!(mixed[0].is_ok() && mixed[1].is_err() && mixed[2].is_ok());
        assert!(mixed[1].as_ref().unwrap_err().message.starts_with("event 1: "));
    }

    #[test]
    fn event_size_limit() {
        let l = Limits { max_event_bytes: sluice_config::ByteSize(10), ..limits() };
        let e = parse(br#"{"value":{"abcdefgh":1}}"#, &l).unwrap_err();
        assert_eq!(e.code, "event_too_large");
        assert!(e.message.contains("limits.max_event_bytes"));
    }

    #[test]
    fn trace_context_is_stored_with_the_events() {
        const REQUEST: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        const OWN: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let body = format!(r#"[{{"value":{{}}}},{{"value":{{}},"headers":{{"traceparent":"{OWN}"}}}}]"#);
        let parsed = || parse_body(&Bytes::from(body.clone()), &limits(), 0, None).unwrap();
        let header = |r: &Result<Record, ApiError>| {
            let r = r.as_ref().unwrap();
            assert!(r.headers.len() <= 1, "{:?}", r.headers);
            r.headers.first().map(|(k, v)| (k.clone(), String::from_utf8(v.to_vec()).unwrap()))
        };
        // Export off (as in this crate's tests): the request's header as received, an event's own kept.
        let mut records = parsed();
        let incoming = TraceParent::parse(REQUEST.as_bytes());
        let spans = propagate_trace(&tracing::Span::none(), incoming, records.iter_mut().flatten());
        assert!(spans.is_empty(), "no per-event spans without export");
        assert_eq!(header(&records[0]), Some(("traceparent".into(), REQUEST.into())));
        assert_eq!(header(&records[1]), Some(("traceparent".into(), OWN.into())));
        // No trace context on the request: events without their own get no header at all.
        let mut records = parsed();
        propagate_trace(&tracing::Span::none(), None, records.iter_mut().flatten());
        assert_eq!(header(&records[0]), None);
        assert_eq!(header(&records[1]), Some(("traceparent".into(), OWN.into())));
    }

    #[test]
    fn values_are_zero_copy_slices_of_the_body() {
        let body = Bytes::from_static(br#"{"value":{"a":1}}"#);
        let r = parse_body(&body, &limits(), 0, None).unwrap().remove(0).unwrap();
        assert_eq!(r.value.as_ptr(), body[9..].as_ptr());
    }
}
