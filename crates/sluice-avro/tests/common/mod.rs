//! Helpers shared by the integration tests.
#![allow(dead_code)]

use serde_json::Value;
use sluice_avro::{Decoder, Encoder, Schema};

pub fn schema(text: &str) -> Schema {
    Schema::parse_str(text).unwrap_or_else(|e| panic!("test schema does not parse: {e}\n{text}"))
}

pub fn encode(schema: &Schema, json: &str) -> Vec<u8> {
    let mut out = Vec::new();
    Encoder::new(schema).unwrap().encode_json(json.as_bytes(), &mut out).unwrap_or_else(|e| panic!("{e} for {json}"));
    out
}

pub fn encode_err(schema: &Schema, json: &str) -> String {
    let mut out = vec![7, 7];
    let err = Encoder::new(schema).unwrap().encode_json(json.as_bytes(), &mut out).expect_err(json);
    assert_eq!(out, [7, 7], "output must be left as it was on error");
    err.to_string()
}

pub fn decode(writer: &Schema, reader: &Schema, avro: &[u8]) -> Value {
    let mut out = Vec::new();
    Decoder::new(writer, reader).unwrap().decode_to_json(avro, &mut out).unwrap_or_else(|e| panic!("{e}"));
    serde_json::from_slice(&out)
        .unwrap_or_else(|e| panic!("decoder wrote invalid json ({e}): {}", String::from_utf8_lossy(&out)))
}

pub fn decode_text(writer: &Schema, reader: &Schema, avro: &[u8]) -> String {
    let mut out = Vec::new();
    Decoder::new(writer, reader).unwrap().decode_to_json(avro, &mut out).unwrap_or_else(|e| panic!("{e}"));
    String::from_utf8(out).unwrap()
}

pub fn decode_err(writer: &Schema, reader: &Schema, avro: &[u8]) -> String {
    let mut out = b"x".to_vec();
    let err = Decoder::new(writer, reader).unwrap().decode_to_json(avro, &mut out).expect_err("decode should fail");
    assert_eq!(out, b"x", "output must be left as it was on error");
    err.to_string()
}

/// Encodes `json`, decodes it with the same schema, and returns the decoded JSON text.
pub fn round_trip(schema: &Schema, json: &str) -> String {
    decode_text(schema, schema, &encode(schema, json))
}

/// Encodes `json` and checks that it decodes back to `expected` (compared as JSON values).
pub fn assert_round_trip(schema: &Schema, json: &str, expected: &str) {
    let got: Value = serde_json::from_str(&round_trip(schema, json)).unwrap();
    let want: Value = serde_json::from_str(expected).unwrap();
    assert_eq!(got, want, "round trip of {json}");
}
