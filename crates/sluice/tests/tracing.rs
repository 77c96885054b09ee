//! Trace propagation through the real binary: an in-test OTLP/HTTP collector receives the spans `sluice serve`
//! exports, and one event posted with a W3C `traceparent` must show up in one trace from ingest through the log
//! and a stream job to the store sink of its topic and of the job's output topic; an event with a `traceparent` of
//! its own keeps its own trace through the same stages, and an event without one (new traces sampled at 0) has none.

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use common::{KillOnDrop, free_port, spawn_server_with_env, wait_ready};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use prost::Message;
use serde_json::{Value, json};

const TRACE_ID: &str = "0af7651916cd43dd8448eb211c80319c";
const PARENT_SPAN: &str = "b7ad6b7169203331";
/// The trace of an event that brings its own `traceparent` header inside the same request.
const OWN_TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const OWN_PARENT_SPAN: &str = "00f067aa0ba902b7";

/// One exported span, as the collector saw it.
#[derive(Debug, Clone)]
struct Got {
    name: String,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    links: Vec<String>,
    attrs: Vec<(String, String)>,
    service: String,
}

impl Got {
    fn attr(&self, key: &str) -> Option<&str> {
        self.attrs.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

type Spans = Arc<Mutex<Vec<Got>>>;

fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

fn text(v: &Option<opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(AnyValue::StringValue(s)) => s.clone(),
        Some(AnyValue::IntValue(i)) => i.to_string(),
        Some(AnyValue::BoolValue(b)) => b.to_string(),
        Some(AnyValue::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

async fn collect(State(spans): State<Spans>, body: Bytes) -> Vec<u8> {
    let req = ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf export request");
    let mut got = spans.lock().unwrap();
    for rs in req.resource_spans {
        let service = rs
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|a| a.key == "service.name")
            .map(|a| text(&a.value))
            .unwrap_or_default();
        for ss in rs.scope_spans {
            for s in ss.spans {
                got.push(Got {
                    name: s.name,
                    trace_id: hex(&s.trace_id),
                    span_id: hex(&s.span_id),
                    parent_span_id: hex(&s.parent_span_id),
                    links: s.links.iter().map(|l| hex(&l.trace_id)).collect(),
                    attrs: s.attributes.iter().map(|a| (a.key.clone(), text(&a.value))).collect(),
                    service: service.clone(),
                });
            }
        }
    }
    // An empty ExportTraceServiceResponse: full success.
    Vec::new()
}

/// An OTLP/HTTP collector on a free port; returns its base URL and what it received.
async fn collector() -> (String, Spans) {
    let spans: Spans = Arc::default();
    let app = axum::Router::new().route("/v1/traces", post(collect)).with_state(spans.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, spans)
}

async fn post_json(http: &reqwest::Client, url: String, body: Value, traceparent: Option<&str>) -> Value {
    let mut req = http.post(url).json(&body);
    if let Some(tp) = traceparent {
        req = req.header("traceparent", tp);
    }
    let r = req.send().await.unwrap();
    let status = r.status();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    assert!(status.is_success(), "{status}: {v}");
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_event_is_one_trace_from_ingest_to_every_sink() {
    let (otlp, spans) = collector().await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let env = [
        ("SLUICE__TRACING__OTLP_ENDPOINT", otlp.as_str()),
        // New traces are never sampled: every exported span belongs to the incoming trace.
        ("SLUICE__TRACING__SAMPLE_RATIO", "0"),
        ("SLUICE__TRACING__SERVICE_NAME", "sluice-test"),
        // Nothing is exported before shutdown: the test also proves the exporter's last flush.
        ("SLUICE__TRACING__EXPORT_INTERVAL", "1h"),
        ("SLUICE__STORE__FLUSH_INTERVAL", "200ms"),
    ];
    let mut server = KillOnDrop(spawn_server_with_env(dir.path(), port, &env));
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
    wait_ready(&http, &base).await;

    post_json(&http, format!("{base}/v1/topics"), json!({"name": "http_requests", "partitions": 1}), None).await;
    let job = "CREATE JOB slow AS INSERT INTO slow_requests SELECT service, latency_ms FROM http_requests \
               WHERE latency_ms > 1000";
    post_json(&http, format!("{base}/v1/jobs"), json!({ "sql": job }), None).await;

    // A request with a traceparent header (it applies to its events) holding one event with a traceparent of its
    // own (which wins for that event), then an event without any trace context.
    let traceparent = format!("00-{TRACE_ID}-{PARENT_SPAN}-01");
    let own = format!("00-{OWN_TRACE_ID}-{OWN_PARENT_SPAN}-01");
    let events = format!("{base}/v1/topics/http_requests/events");
    let traced = json!([
        {"key": "k", "value": {"service": "checkout", "latency_ms": 1500}},
        {"key": "k", "value": {"service": "cart", "latency_ms": 1200}, "headers": {"traceparent": own}},
    ]);
    post_json(&http, events.clone(), traced, Some(&traceparent)).await;
    let untraced = json!([{"key": "k", "value": {"service": "search", "latency_ms": 2500}}]);
    post_json(&http, events, untraced, None).await;

    // The stored traceparents continue the incoming traces from sluice's spans; the untraced event has none.
    let r = http.get(format!("{base}/v1/topics/http_requests/events?partition=0&offset=0&limit=3")).send().await;
    let read: Value = r.unwrap().json().await.unwrap();
    let header = |i: usize| read["events"][i]["headers"]["traceparent"].as_str().map(str::to_string);
    let stored = header(0).unwrap_or_else(|| panic!("{read}"));
    assert!(stored.starts_with(&format!("00-{TRACE_ID}-")) && stored.ends_with("-01"), "{stored}");
    assert!(!stored.contains(PARENT_SPAN), "the stored parent is sluice's ingest span: {stored}");
    let stored_own = header(1).unwrap_or_else(|| panic!("{read}"));
    assert!(stored_own.starts_with(&format!("00-{OWN_TRACE_ID}-")), "{stored_own}");
    assert!(!stored_own.contains(OWN_PARENT_SPAN), "the stored parent is sluice's ingest.event span: {stored_own}");
    assert_eq!(header(2), None, "unsampled: no header: {read}");

    // Both events are in the store, from the source topic and from the job's output topic.
    for table in ["http_requests", "slow_requests"] {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let r = http
                .post(format!("{base}/v1/query"))
                .json(&json!({"sql": format!("SELECT count(*) AS n FROM {table}")}));
            let v: Value = r.send().await.unwrap().json().await.unwrap();
            if v["rows"][0]["n"] == 3 {
                break;
            }
            assert!(Instant::now() < deadline, "{table}: {v}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    assert!(spans.lock().unwrap().is_empty(), "the export interval has not passed yet");
    stop_gracefully(&mut server.0);

    // Spans of every stage arrived in the incoming trace: ingest, log append, the job, and the store sink of both
    // the source topic and the job's output topic.
    let want = |g: &[Got]| {
        let ours: Vec<&Got> = g.iter().filter(|s| s.trace_id == TRACE_ID).collect();
        let has = |name: &str, attr: Option<(&str, &str)>| {
            ours.iter().any(|s| s.name == name && attr.is_none_or(|(k, v)| s.attr(k) == Some(v)))
        };
        has("ingest", None)
            && has("log.append", None)
            && has("job.event", Some(("job", "slow")))
            && has("job.process", Some(("job", "slow")))
            && has("sink.event", Some(("topic", "http_requests")))
            && has("sink.event", Some(("topic", "slow_requests")))
            && has("sink.write", Some(("sink", "store")))
    };
    let got = spans.lock().unwrap().clone();
    let names: BTreeSet<String> = got.iter().map(|s| format!("{} {} {:?}", s.name, s.trace_id, s.attrs)).collect();
    assert!(want(&got), "spans of the trace missing; got {names:#?}");
    let ingest = got.iter().find(|s| s.name == "ingest" && s.trace_id == TRACE_ID).unwrap();
    assert_eq!(ingest.parent_span_id, PARENT_SPAN, "the ingest span is the caller's child");
    assert_eq!(stored, format!("00-{TRACE_ID}-{}-01", ingest.span_id), "the log holds the ingest span's context");
    // The tree: caller -> ingest -> job.event -> sink.event of the job's output; ingest -> sink.event of the source.
    let one = |name: &str, topic: Option<&str>| {
        got.iter()
            .find(|s| s.name == name && s.trace_id == TRACE_ID && topic.is_none_or(|t| s.attr("topic") == Some(t)))
            .unwrap_or_else(|| panic!("{name} {topic:?}"))
    };
    let job_event = one("job.event", None);
    assert_eq!(job_event.parent_span_id, ingest.span_id);
    assert_eq!(one("sink.event", Some("http_requests")).parent_span_id, ingest.span_id);
    assert_eq!(one("sink.event", Some("slow_requests")).parent_span_id, job_event.span_id);
    assert_eq!(ingest.service, "sluice-test");
    assert_eq!(ingest.attr("topic"), Some("http_requests"));
    let traces: BTreeSet<&str> = got.iter().map(|s| s.trace_id.as_str()).collect();
    assert_eq!(traces, BTreeSet::from([TRACE_ID, OWN_TRACE_ID]), "no other trace is sampled at ratio 0");
    assert!(ingest.links.contains(&OWN_TRACE_ID.to_string()), "the request links to its events' own traces");

    // The event with its own traceparent: caller -> ingest.event -> job.event -> sink.event, and the source
    // topic's sink.event, all in its own trace.
    let in_own = |name: &str, topic: Option<&str>| {
        got.iter()
            .find(|s| s.name == name && s.trace_id == OWN_TRACE_ID && topic.is_none_or(|t| s.attr("topic") == Some(t)))
            .unwrap_or_else(|| panic!("{name} {topic:?} in the event's own trace: {names:#?}"))
    };
    let ingest_event = in_own("ingest.event", None);
    assert_eq!(ingest_event.parent_span_id, OWN_PARENT_SPAN);
    assert_eq!(stored_own, format!("00-{OWN_TRACE_ID}-{}-01", ingest_event.span_id));
    let own_job = in_own("job.event", None);
    assert_eq!(own_job.parent_span_id, ingest_event.span_id);
    assert_eq!(in_own("sink.event", Some("http_requests")).parent_span_id, ingest_event.span_id);
    assert_eq!(in_own("sink.event", Some("slow_requests")).parent_span_id, own_job.span_id);
    let batch = got.iter().find(|s| s.name == "sink.write" && s.trace_id == TRACE_ID).unwrap();
    assert!(batch.links.contains(&TRACE_ID.to_string()), "batch spans link to their traced events: {batch:?}");
}

/// SIGTERM, then wait for the process to exit by itself (it flushes the sinks and the trace exporter).
fn stop_gracefully(child: &mut std::process::Child) {
    let sent = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(sent.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            assert!(status.success(), "clean exit: {status}");
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("sluice did not stop within 20s of SIGTERM");
}
