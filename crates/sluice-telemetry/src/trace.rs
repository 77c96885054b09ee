//! Distributed tracing: `tracing` spans of every stage, exported over OpenTelemetry OTLP/HTTP (protobuf) when
//! `[tracing] otlp_endpoint` is set, and continued across the log through the `traceparent` record header.
//!
//! The stages use only `tracing` and the few functions here ([`set_parent`], [`add_link`], [`traceparent_of`],
//! [`exporting`]), so no OpenTelemetry type leaks into them; the OpenTelemetry crates are behind this crate's
//! `otlp` feature, which only the binary turns on. Without it, or with export off, the functions do nothing and
//! [`exporting`] is false, so the stages skip their per-traced-event work entirely.
//!
//! Sampling is the SDK's parent-based ratio sampler: a span under an incoming sampled `traceparent` is always
//! recorded, one under an unsampled one never, and a new trace (no parent) is recorded with probability
//! `sample_ratio`, decided from its trace id. See `docs/adr/0010-tracing-and-propagation.md`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tracing::Span;

pub use crate::traceparent::{TRACEPARENT_HEADER, TraceParent};

static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Whether spans are exported (an OTLP endpoint is configured and the exporter is installed). The stages check
/// this before any per-event tracing work, so with export off a traced event costs nothing past ingest.
#[inline]
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// Makes `parent` (a remote span, e.g. from a record header) the parent of `span`. Call it before the span is
/// first entered; later calls are ignored.
pub fn set_parent(span: &Span, parent: &TraceParent) {
    #[cfg(feature = "otlp")]
    otel::set_parent(span, parent);
    #[cfg(not(feature = "otlp"))]
    let _ = (span, parent);
}

/// Links `span` to the span `to` (a batch span to each traced event it carries).
pub fn add_link(span: &Span, to: &TraceParent) {
    #[cfg(feature = "otlp")]
    otel::add_link(span, to);
    #[cfg(not(feature = "otlp"))]
    let _ = (span, to);
}

/// The `traceparent` naming `span` itself, when it is recorded (sampled and exported): what ingest stores with
/// an event and a job puts on what it writes, so the next stage's spans become its children.
pub fn traceparent_of(span: &Span) -> Option<TraceParent> {
    #[cfg(feature = "otlp")]
    return otel::traceparent_of(span);
    #[cfg(not(feature = "otlp"))]
    {
        let _ = span;
        None
    }
}

/// The sampled `traceparent` among a record's headers, when spans are exported; `None` at once otherwise (and for
/// the common record without headers), so callers may ask per record.
#[inline]
pub fn sampled_parent<V: AsRef<[u8]>>(headers: &[(String, V)]) -> Option<TraceParent> {
    if headers.is_empty() || !exporting() {
        return None;
    }
    TraceParent::from_headers(headers).filter(TraceParent::sampled)
}

/// The traced records of a batch: (index, trace context) of each record with a sampled `traceparent`. Empty
/// without a pass over the records when spans are not exported.
pub fn traced_records<'a, V: AsRef<[u8]> + 'a>(
    headers: impl Iterator<Item = &'a [(String, V)]>,
) -> Vec<(usize, TraceParent)> {
    if !exporting() {
        return Vec::new();
    }
    headers.enumerate().filter_map(|(i, h)| sampled_parent(h).map(|tp| (i, tp))).collect()
}

/// Ties the span of a batch to the traces of the events it carries: the first traced event's span becomes its
/// parent (so a batch carrying one traced event is simply part of that trace) and it links to every traced
/// event. Call before the span is first entered.
pub fn continue_batch<'a>(span: &Span, traced: impl IntoIterator<Item = &'a TraceParent>) {
    let mut first = true;
    for tp in traced {
        if first {
            set_parent(span, tp);
            first = false;
        }
        add_link(span, tp);
    }
}

/// Where and how spans are exported (`[tracing]` in the config).
#[derive(Debug, Clone)]
pub struct OtlpSettings {
    /// The collector's OTLP/HTTP base URL; spans are posted to `{endpoint}/v1/traces`.
    pub endpoint: String,
    /// Share of new traces that are recorded, 0 to 1.
    pub sample_ratio: f64,
    pub service_name: String,
    /// The batch exporter's delay: finished spans are sent at least this often.
    pub export_interval: Duration,
}

/// Keeps the exporter alive; [`TracingGuard::shutdown`] exports what is still queued.
#[must_use = "dropping the guard without shutdown may lose the last spans"]
pub struct TracingGuard {
    #[cfg(feature = "otlp")]
    pub(crate) provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl TracingGuard {
    pub(crate) fn none() -> Self {
        TracingGuard {
            #[cfg(feature = "otlp")]
            provider: None,
        }
    }

    /// Exports the spans still queued and stops the exporter; blocks up to a few seconds (call it off the async
    /// workers, e.g. in `spawn_blocking`).
    pub fn shutdown(self) {
        #[cfg(feature = "otlp")]
        if let Some(p) = self.provider {
            EXPORTING.store(false, Ordering::Relaxed);
            if let Err(e) = p.shutdown_with_timeout(Duration::from_secs(5)) {
                tracing::warn!(error = %e, "trace exporter shutdown failed; the last spans may be lost");
            }
        }
    }
}

#[cfg(feature = "otlp")]
pub(crate) mod otel {
    use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, TracerProvider};
    use opentelemetry_otlp::{Protocol, WithExportConfig};
    use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider};
    use tracing::Span;
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    use super::{EXPORTING, Ordering, OtlpSettings, TraceParent};

    fn span_context(tp: &TraceParent) -> SpanContext {
        SpanContext::new(
            TraceId::from_bytes(tp.trace_id),
            SpanId::from_bytes(tp.span_id),
            TraceFlags::new(tp.flags),
            true,
            TraceState::default(),
        )
    }

    pub fn set_parent(span: &Span, parent: &TraceParent) {
        let cx = opentelemetry::Context::new().with_remote_span_context(span_context(parent));
        // Fails only when the span is disabled or export is off: nothing to continue then.
        let _ = span.set_parent(cx);
    }

    pub fn add_link(span: &Span, to: &TraceParent) {
        span.add_link(span_context(to));
    }

    pub fn traceparent_of(span: &Span) -> Option<TraceParent> {
        let cx = span.context();
        let sc = cx.span().span_context().clone();
        (sc.is_valid() && sc.is_sampled()).then(|| TraceParent {
            trace_id: sc.trace_id().to_bytes(),
            span_id: sc.span_id().to_bytes(),
            flags: sc.trace_flags().to_u8(),
        })
    }

    /// Parent-based: follow the incoming decision; new traces by ratio of their trace id.
    pub fn sampler(ratio: f64) -> Sampler {
        Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(ratio)))
    }

    /// The tracing layer over `provider`; only this crate names its type.
    pub fn layer<S>(provider: &SdkTracerProvider) -> impl tracing_subscriber::Layer<S> + Send + Sync + 'static
    where
        S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a> + Send + Sync,
    {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("sluice"))
            .with_location(false)
            .with_threads(false)
            .with_tracked_inactivity(false)
            .with_context_activation(false)
    }

    /// The OTLP/HTTP protobuf exporter behind a batch processor (its own thread; the blocking HTTP client needs
    /// no async runtime there).
    pub fn provider(s: &OtlpSettings) -> Result<SdkTracerProvider, String> {
        let endpoint = format!("{}/v1/traces", s.endpoint.trim_end_matches('/'));
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(endpoint.clone())
            .with_timeout(std::time::Duration::from_secs(10))
            .build()
            .map_err(|e| format!("cannot build the trace exporter for `{endpoint}`: {e}"))?;
        let batch = BatchConfigBuilder::default()
            .with_scheduled_delay(s.export_interval)
            .with_max_queue_size(16_384)
            .with_max_export_batch_size(1024)
            .build();
        let processor = BatchSpanProcessor::builder(exporter).with_batch_config(batch).build();
        let resource = opentelemetry_sdk::Resource::builder().with_service_name(s.service_name.clone()).build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_sampler(sampler(s.sample_ratio))
            .with_resource(resource)
            .build();
        EXPORTING.store(true, Ordering::Relaxed);
        Ok(provider)
    }
}

#[cfg(all(test, feature = "otlp"))]
mod tests {
    use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    /// Runs `f` under a subscriber that records into memory with the given ratio, returns the finished spans.
    fn record(ratio: f64, f: impl FnOnce()) -> Vec<SpanData> {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .with_sampler(otel::sampler(ratio))
            .build();
        let subscriber = tracing_subscriber::registry().with(otel::layer(&provider));
        tracing::subscriber::with_default(subscriber, f);
        provider.force_flush().unwrap();
        exporter.get_finished_spans().unwrap()
    }

    #[test]
    fn spans_continue_an_incoming_traceparent() {
        let parent = TraceParent::parse(PARENT.as_bytes()).unwrap();
        let mut stored = None;
        let spans = record(0.0, || {
            let span = tracing::info_span!("ingest");
            set_parent(&span, &parent);
            stored = traceparent_of(&span);
            let _g = span.enter();
            tracing::info_span!("log.append").in_scope(|| {});
        });
        let stored = stored.expect("a sampled parent is recorded even at ratio 0");
        assert_eq!(stored.trace_id, parent.trace_id);
        assert_ne!(stored.span_id, parent.span_id, "the stored traceparent names the ingest span");
        assert_eq!(spans.len(), 2);
        for s in &spans {
            assert_eq!(s.span_context.trace_id().to_bytes(), parent.trace_id, "{}", s.name);
        }
        let ingest = spans.iter().find(|s| s.name == "ingest").unwrap();
        assert_eq!(ingest.parent_span_id.to_bytes(), parent.span_id);
    }

    #[test]
    fn unsampled_parents_stay_unsampled() {
        let parent = TraceParent { flags: 0, ..TraceParent::parse(PARENT.as_bytes()).unwrap() };
        let mut stored = Some(parent);
        let spans = record(1.0, || {
            let span = tracing::info_span!("ingest");
            set_parent(&span, &parent);
            stored = traceparent_of(&span);
        });
        assert!(spans.is_empty() && stored.is_none());
    }

    #[test]
    fn new_traces_are_sampled_by_ratio() {
        let count = |ratio| {
            let mut sampled = 0;
            let spans = record(ratio, || {
                for _ in 0..2000 {
                    sampled += traceparent_of(&tracing::info_span!("ingest")).is_some() as usize;
                }
            });
            assert_eq!(spans.len(), sampled, "exactly the sampled ones are exported");
            sampled
        };
        assert_eq!(count(0.0), 0);
        assert_eq!(count(1.0), 2000);
        let some = count(0.1);
        assert!((100..=300).contains(&some), "about 10% of 2000: {some}");
    }

    #[test]
    fn batch_spans_link_to_traced_events() {
        let a = TraceParent::parse(PARENT.as_bytes()).unwrap();
        let b = TraceParent { trace_id: [7; 16], ..a };
        let spans = record(0.0, || {
            let batch = tracing::info_span!("sink.write");
            add_link(&batch, &a);
            add_link(&batch, &b);
            for tp in [a, b] {
                let event = tracing::info_span!(parent: &batch, "sink.event");
                set_parent(&event, &tp);
                drop(event);
            }
        });
        let events: Vec<_> = spans.iter().filter(|s| s.name == "sink.event").collect();
        let ids: Vec<_> = events.iter().map(|s| s.span_context.trace_id().to_bytes()).collect();
        assert_eq!(ids, vec![a.trace_id, b.trace_id], "each event span is in its event's trace");
        // The batch span itself is a new root: not sampled at ratio 0, so only the event spans are exported.
        assert!(spans.iter().all(|s| s.name != "sink.write"));
    }
}
