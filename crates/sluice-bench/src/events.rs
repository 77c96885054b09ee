//! A generator of realistic HTTP request-log events: a dozen services with their endpoints, mostly-2xx status
//! codes, long-tailed latencies, Zipf-like user ids (used as keys, so partitions see skew) and message text.
//! About 300 bytes per event. Deterministic for a seed.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const SERVICES: [(&str, &[&str]); 12] = [
    ("checkout", &["/cart", "/checkout", "/payment/confirm"]),
    ("search", &["/search", "/suggest"]),
    ("auth", &["/login", "/logout", "/token/refresh"]),
    ("catalog", &["/products", "/products/{id}", "/categories"]),
    ("inventory", &["/stock/{sku}", "/reserve"]),
    ("shipping", &["/quote", "/labels"]),
    ("reviews", &["/reviews/{id}", "/reviews"]),
    ("profile", &["/me", "/me/addresses"]),
    ("recommend", &["/for-you", "/similar/{id}"]),
    ("notify", &["/email", "/push"]),
    ("billing", &["/invoices", "/refunds"]),
    ("gateway", &["/health", "/graphql"]),
];
const METHODS: [&str; 4] = ["GET", "GET", "POST", "PUT"];
const REGIONS: [&str; 4] = ["eu-west-1", "us-east-1", "us-west-2", "ap-south-1"];
const AGENTS: [&str; 4] = ["Mozilla/5.0 (X11; Linux x86_64)", "okhttp/4.12.0", "curl/8.5.0", "Go-http-client/2.0"];
const OK_MSGS: [&str; 4] = [
    "request completed normally",
    "served from cache after revalidation",
    "completed with fallback to secondary replica",
    "completed; response streamed to client",
];
const ERR_MSGS: [&str; 5] = [
    "upstream timeout while waiting for payment provider",
    "connection reset by peer during TLS handshake",
    "database deadlock detected; transaction rolled back",
    "rate limit exceeded for tenant",
    "circuit breaker open for downstream dependency",
];

/// The Avro schema of the generated values, for schema-bound runs.
pub const AVRO_SCHEMA: &str = r#"{"type":"record","name":"HttpRequest","namespace":"sluice.bench","fields":[
{"name":"service","type":"string"},{"name":"endpoint","type":"string"},
{"name":"method","type":{"type":"enum","name":"Method","symbols":["GET","POST","PUT","DELETE","PATCH"]}},
{"name":"status","type":"int"},{"name":"latency_ms","type":"long"},{"name":"user_id","type":"string"},
{"name":"region","type":"string"},{"name":"host","type":"string"},{"name":"user_agent","type":"string"},
{"name":"bytes_out","type":"long"},{"name":"trace_id","type":"string"},{"name":"message","type":"string"}]}"#;

/// One event as NDJSON event envelope (with `key` = user id), without a trailing newline.
pub fn event(rng: &mut StdRng) -> String {
    let (service, endpoints) = SERVICES[rng.random_range(0..SERVICES.len())];
    let endpoint = endpoints[rng.random_range(0..endpoints.len())];
    let roll: f64 = rng.random();
    let status = if roll < 0.90 {
        200
    } else if roll < 0.95 {
        [400, 401, 404, 429][rng.random_range(0..4)]
    } else {
        [500, 502, 503, 504][rng.random_range(0..4)]
    };
    // Log-normal-ish latency: most requests fast, a long tail.
    let latency_ms = (rng.random::<f64>().powi(4) * 2000.0 + rng.random_range(1.0..20.0)).round() as u64;
    // Zipf-like user ids over 100k users: a few users are very hot.
    let user = (100_000f64.powf(rng.random::<f64>())) as u64;
    let msg = if status >= 500 {
        ERR_MSGS[rng.random_range(0..ERR_MSGS.len())]
    } else {
        OK_MSGS[rng.random_range(0..OK_MSGS.len())]
    };
    let trace: u64 = rng.random();
    format!(
        "{{\"key\":\"user-{user}\",\"value\":{{\"service\":\"{service}\",\"endpoint\":\"{endpoint}\",\
         \"method\":\"{}\",\"status\":{status},\"latency_ms\":{latency_ms},\"user_id\":\"user-{user}\",\
         \"region\":\"{}\",\"host\":\"{service}-{}.prod.internal\",\"user_agent\":\"{}\",\"bytes_out\":{},\"trace_id\":\"{trace:016x}\",\"message\":\"{msg}\"}}}}",
        METHODS[rng.random_range(0..METHODS.len())],
        REGIONS[rng.random_range(0..REGIONS.len())],
        rng.random_range(0..40),
        AGENTS[rng.random_range(0..AGENTS.len())],
        rng.random_range(200..50_000),
    )
}

/// `n` events as one NDJSON body.
pub fn ndjson_batch(seed: u64, n: usize) -> Vec<u8> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = Vec::with_capacity(n * 320);
    for _ in 0..n {
        out.extend_from_slice(event(&mut rng).as_bytes());
        out.push(b'\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_valid_json_of_about_300_bytes() {
        let body = ndjson_batch(1, 1000);
        let lines: Vec<&[u8]> = body.split(|&b| b == b'\n').filter(|l| !l.is_empty()).collect();
        assert_eq!(lines.len(), 1000);
        for l in &lines {
            let v: serde_json::Value = serde_json::from_slice(l).unwrap();
            assert!(v["value"]["status"].is_u64() && v["key"].is_string());
        }
        let avg = body.len() / 1000;
        assert!((280..=330).contains(&avg), "average event is {avg} bytes");
        assert_eq!(ndjson_batch(1, 10), ndjson_batch(1, 10), "deterministic for a seed");
        let schema: serde_json::Value = serde_json::from_str(AVRO_SCHEMA).unwrap();
        let fields: Vec<&str> =
            schema["fields"].as_array().unwrap().iter().map(|f| f["name"].as_str().unwrap()).collect();
        let v: serde_json::Value = serde_json::from_slice(lines[0]).unwrap();
        let mut keys: Vec<&str> = v["value"].as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort();
        let mut sorted = fields.clone();
        sorted.sort();
        assert_eq!(keys, sorted, "the schema has exactly the generated fields");
    }
}
