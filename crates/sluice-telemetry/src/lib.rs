//! Telemetry shared by every Sluice stage: structured logging set-up ([`init_logging`]) and the Prometheus
//! exposition of all metrics ([`render_metrics`]). Metrics themselves live beside the code they measure, counted
//! per batch rather than per event, with bounded labels (topic and partition at most, never keys or users).
//! Distributed tracing lives in [`trace`] (spans exported over OTLP, the `traceparent` carried through the log,
//! [`traceparent::TraceParent`]).

pub mod errors;
pub mod trace;
pub mod traceparent;

pub use errors::{ErrorEvent, recent_errors, record_error};
use prometheus::{Encoder, Registry, TextEncoder};
use tracing_subscriber::fmt::format::FmtSpan;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Installs the global tracing subscriber: human-readable lines, or one JSON object per line with `json`.
/// `filter` is a tracing filter such as `info` or `sluice_log=debug,info`; `RUST_LOG` wins when set.
pub fn init_logging(json: bool, filter: &str) -> Result<(), String> {
    init(json, filter, None).map(|_guard| ())
}

/// [`init_logging`], plus span export over OTLP when `otlp` is given (and the `otlp` feature is on). The log
/// filter applies to log lines only: spans of the `sluice*` crates at `info` and above are exported whatever the
/// log level. In JSON, a line written inside spans lists them (`spans`, with their fields, e.g. `trace_id`).
pub fn init(json: bool, filter: &str, otlp: Option<&trace::OtlpSettings>) -> Result<trace::TracingGuard, String> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(f) if !f.is_empty() => EnvFilter::try_new(&f).map_err(|e| format!("invalid RUST_LOG `{f}`: {e}"))?,
        _ => EnvFilter::try_new(filter).map_err(|e| format!("invalid logging.level `{filter}`: {e}"))?,
    };
    let fmt = tracing_subscriber::fmt::layer().with_span_events(FmtSpan::NONE);
    let fmt = if json {
        fmt.json().flatten_event(true).with_current_span(false).with_span_list(true).with_filter(filter).boxed()
    } else {
        fmt.with_target(false).with_filter(filter).boxed()
    };
    #[allow(unused_mut)]
    let mut guard = trace::TracingGuard::none();
    #[allow(unused_mut)]
    let mut layers = vec![fmt];
    match otlp {
        #[cfg(feature = "otlp")]
        Some(settings) => {
            let provider = trace::otel::provider(settings)?;
            let spans = tracing_subscriber::filter::Targets::new().with_target("sluice", tracing::Level::INFO);
            layers.push(trace::otel::layer(&provider).with_filter(spans).boxed());
            guard.provider = Some(provider);
        }
        #[cfg(not(feature = "otlp"))]
        Some(_) => return Err("this build has no trace export (the `otlp` feature of sluice-telemetry)".into()),
        None => {}
    }
    tracing_subscriber::registry().with(layers).try_init().map_err(|e| format!("logging already initialised: {e}"))?;
    Ok(guard)
}

/// All metrics in the Prometheus text format: the process-wide default registry (static per-stage metrics and
/// process metrics) plus `extra` registries (per-instance collectors).
pub fn render_metrics(extra: &[&Registry]) -> String {
    let mut families = prometheus::gather();
    for r in extra {
        families.extend(r.gather());
    }
    families.sort_by(|a, b| a.name().cmp(b.name()));
    let mut buf = Vec::new();
    TextEncoder::new().encode(&families, &mut buf).expect("text encoding of metrics cannot fail");
    String::from_utf8(buf).expect("metrics text is utf-8")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_default_and_extra_registries() {
        let r = Registry::new();
        let c = prometheus::IntCounter::new("sluice_test_things_total", "Things.").unwrap();
        r.register(Box::new(c.clone())).unwrap();
        c.inc_by(3);
        let text = render_metrics(&[&r]);
        assert!(text.contains("sluice_test_things_total 3"), "{text}");
        assert!(text.contains("process_resident_memory_bytes"), "process metrics are exported: {text}");
    }
}
