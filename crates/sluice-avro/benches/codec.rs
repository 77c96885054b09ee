//! Codec throughput on the ingest benchmark's ~300-byte HttpRequest event.
//!
//! `cargo bench -p sluice-avro`; each iteration handles a batch of distinct events, reported as events/s.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sluice_avro::{Decoder, Encoder, Schema};

const SCHEMA: &str = include_str!("http_request.avsc");

/// The reader of a later version: `user_agent` removed, `zone` added with a default.
const READER: &str = r#"{"type":"record","name":"HttpRequest","namespace":"sluice.bench","fields":[
    {"name":"service","type":"string"},{"name":"endpoint","type":"string"},
    {"name":"method","type":{"type":"enum","name":"Method","symbols":["GET","POST","PUT","DELETE","PATCH","HEAD","OPTIONS"]}},
    {"name":"status","type":"int"},{"name":"latency_ms","type":"long"},{"name":"user_id","type":"string"},
    {"name":"region","type":"string"},{"name":"zone","type":"string","default":"unknown"},{"name":"host","type":"string"},
    {"name":"bytes_out","type":"long"},{"name":"trace_id","type":"string"},{"name":"message","type":"string"}]}"#;

const BATCH: usize = 256;

fn events() -> Vec<String> {
    let mut rng = StdRng::seed_from_u64(7);
    let services = ["checkout", "search", "auth", "catalog", "payments"];
    let methods = ["GET", "POST", "PUT", "DELETE"];
    let messages = ["request completed normally", "upstream timeout after retries", "cache miss, fetched from origin"];
    (0..BATCH)
        .map(|i| {
            let service = services[i % services.len()];
            format!(
                r#"{{"service":"{service}","endpoint":"/{service}/items/{}","method":"{}","status":{},"latency_ms":{},"user_id":"user-{}","region":"eu-west-{}","host":"{service}-{}.prod.internal","user_agent":"curl/8.5.0","bytes_out":{},"trace_id":"{:016x}","message":"{}"}}"#,
                rng.random_range(1..10_000),
                methods[rng.random_range(0..methods.len())],
                [200, 201, 404, 503][rng.random_range(0..4)],
                rng.random_range(1..5_000),
                rng.random_range(1..1_000_000),
                rng.random_range(1..4),
                rng.random_range(1..20),
                rng.random_range(0..10_000_000),
                rng.random::<u64>(),
                messages[rng.random_range(0..messages.len())],
            )
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let schema = Schema::parse_str(SCHEMA).unwrap();
    let reader = Schema::parse_str(READER).unwrap();
    let encoder = Encoder::new(&schema).unwrap();
    let events = events();
    let avg = events.iter().map(String::len).sum::<usize>() / events.len();
    eprintln!("average event: {avg} bytes of JSON");

    let mut bodies = Vec::new();
    for e in &events {
        let mut out = Vec::new();
        encoder.encode_json(e.as_bytes(), &mut out).unwrap();
        bodies.push(out);
    }

    let mut g = c.benchmark_group("http_request");
    g.throughput(Throughput::Elements(BATCH as u64));
    let mut out = Vec::with_capacity(1024);
    g.bench_function("encode_json", |b| {
        b.iter(|| {
            for e in &events {
                out.clear();
                encoder.encode_json(black_box(e.as_bytes()), &mut out).unwrap();
                black_box(&out);
            }
        })
    });

    // Members in reverse schema order: the out-of-order path.
    let reversed: Vec<String> = events
        .iter()
        .map(|e| {
            let v: serde_json::Map<String, serde_json::Value> = serde_json::from_str(e).unwrap();
            let pairs: Vec<String> =
                v.iter().rev().map(|(k, v)| format!("{}:{v}", serde_json::to_string(k).unwrap())).collect();
            format!("{{{}}}", pairs.join(","))
        })
        .collect();
    g.bench_function("encode_json_reordered", |b| {
        b.iter(|| {
            for e in &reversed {
                out.clear();
                encoder.encode_json(black_box(e.as_bytes()), &mut out).unwrap();
                black_box(&out);
            }
        })
    });

    let decoders = [
        ("decode_to_json", Decoder::new(&schema, &schema).unwrap()),
        ("decode_to_json_resolved", Decoder::new(&schema, &reader).unwrap()),
    ];
    for (name, decoder) in &decoders {
        g.bench_function(*name, |b| {
            b.iter(|| {
                for body in &bodies {
                    out.clear();
                    decoder.decode_to_json(black_box(body), &mut out).unwrap();
                    black_box(&out);
                }
            })
        });
    }
    g.finish();
}

/// For scale: serde_json merely checking the same events, the floor under `encode_json`.
fn reference(c: &mut Criterion) {
    let events = events();
    let mut g = c.benchmark_group("reference");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.bench_function("serde_json_skip", |b| {
        b.iter(|| {
            for e in &events {
                let _: serde::de::IgnoredAny = serde_json::from_slice(black_box(e.as_bytes())).unwrap();
            }
        })
    });
    g.finish();
}

criterion_group!(benches, bench, reference);
criterion_main!(benches);
