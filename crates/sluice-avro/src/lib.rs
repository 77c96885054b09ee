//! Avro codecs for Sluice: JSON events to Avro binary on ingest, Avro binary to JSON (with schema
//! resolution) for every reader, and the Confluent wire format.
//!
//! Main types:
//! - [`Encoder`]: JSON text -> Avro binary for one writer schema, compiled once, `Send + Sync`.
//! - [`Decoder`]: Avro binary written with one schema -> JSON text of another (or the same) schema,
//!   applying the Avro specification's schema resolution.
//! - [`wire`]: the Confluent framing (magic byte 0, 4-byte big-endian schema id, body).
//! - [`types`]: what a schema is underneath ([`types::kind`], logical types as their underlying type) and how
//!   a type is named in messages ([`types::describe`]); shared with the schema registry.
//! - [`CodecError`] (schema problems), [`EncodeError`], [`DecodeError`], [`WireError`].
//!
//! Schemas are [`Schema`]s parsed with `apache_avro::Schema::parse_str`; the codecs themselves do not go
//! through `apache_avro::types::Value` or `serde_json::Value` per event: a schema is compiled into a plan,
//! and encoding streams serde_json's tokens straight into Avro bytes, decoding writes JSON text directly.
//!
//! # JSON mapping
//!
//! Natural JSON, the same in both directions (what the decoder writes, the encoder reads back):
//!
//! | Avro | JSON |
//! |---|---|
//! | null, boolean, string | null, `true`/`false`, string |
//! | int, long | integer within range (`35.0` and `1e3` are integers too; `1.5` or `3000000000` for an int is an error) |
//! | float, double | number (integers accepted); NaN and infinities as the strings `"NaN"`, `"Infinity"`, `"-Infinity"` |
//! | bytes, fixed | string where each char U+0000..U+00FF is one byte (Avro's JSON convention); fixed must have its size |
//! | enum | string symbol |
//! | array, map | array, object |
//! | record | object; members in any order; a missing field takes the schema default, else is an error; an unknown member is an error |
//! | union | the value itself, encoded with the first branch it fits (`null` -> the null branch); also Avro's tagged form `{"type name": value}` when the object has exactly one member and it names a branch (`{"string": "x"}`, `{"com.acme.Rec": {...}}`; named types by full or short name, logical types by their underlying type). The decoder writes the untagged value |
//! | date | `"YYYY-MM-DD"` (encoder: also days as an integer) |
//! | time-millis, time-micros | `"HH:MM:SS.fff"`, `"HH:MM:SS.ffffff"` (encoder: also the integer; must be within one day) |
//! | timestamp-millis/-micros/-nanos, local-timestamp-* | RFC 3339 in UTC at the unit's precision, `"2024-05-01T10:00:00.500Z"` (encoder: also epoch units as an integer, any offset, and for local timestamps no offset; digits finer than the unit are truncated) |
//! | decimal (bytes or fixed) | string `"12.34"` with exactly `scale` fraction digits (encoder: also JSON numbers and exponents; more digits than `precision`, or nonzero digits beyond `scale`, are errors) |
//! | big-decimal | string of the decimal at its own scale |
//! | uuid | string, checked as `8-4-4-4-12` hex on encode |
//! | duration | `{"months": m, "days": d, "millis": ms}` (encoder: also the 12 raw bytes as a string) |
//!
//! Years outside 0000..=9999 are written `+YYYYY`/`-YYYY` (ISO 8601 expanded years) and read back.
//! Schema defaults are read in Avro's JSON convention (a decimal default is its bytes, not its digits).
//!
//! # Schema resolution
//!
//! [`Decoder::new`] follows the specification: int -> long/float/double, long -> float/double, float ->
//! double, string <-> bytes; named types match by full name, unqualified name, or a reader alias; record
//! fields by name or reader field alias; writer-only fields are skipped; reader-only fields take their
//! default (no default: [`CodecError::MissingDefault`]); an unknown enum symbol takes the reader's enum
//! default (none: a [`DecodeError`] naming the symbol); a writer union branch the reader cannot take is an
//! error only when a value uses it. Logical types resolve by their underlying type (the reader's logical type
//! interprets the value), except that decimal scales must agree. The JSON members follow the reader's
//! field order.
//!
//! # Errors and limits
//!
//! Inputs are untrusted: no input makes a codec panic. On error the output buffer is left as it was, and the
//! message names the field path (`field `request.latency_ms`: expected long, got string "abc"`). Decoding
//! refuses values nested deeper than 128 records/arrays/maps (serde_json's own limit, which also bounds
//! encoding), blocks claiming more items than the remaining bytes can hold, and more than 2^20 zero-byte
//! items (nulls, empty records) per body. Floats are parsed exactly (serde_json's `float_roundtrip`).
//!
//! apache-avro 0.21 turns `uuid` on `fixed(16)` into its string-based `Schema::Uuid`, so such fields are
//! read and written as strings (as apache-avro itself does), and it rejects `decimal` fields with defaults
//! when parsing a schema.

mod decode;
mod encode;
mod error;
mod json;
mod logical;
mod names;
pub mod types;
pub mod wire;

pub use apache_avro::Schema;
pub use error::{CodecError, DecodeError, DecodeErrorKind, EncodeError, EncodeErrorKind, WireError};

/// JSON -> Avro binary, compiled once per writer schema and reused for every event (`Send + Sync`).
pub struct Encoder {
    plan: encode::Plan,
}

impl Encoder {
    /// Compiles `schema`; fails on unknown type references and on defaults that do not fit their field.
    pub fn new(schema: &Schema) -> Result<Encoder, CodecError> {
        Ok(Encoder { plan: encode::Plan::compile(schema)? })
    }

    /// Appends the Avro binary encoding of the JSON text `json` (one value of the schema's type) to `out`.
    /// On error `out` is left as it was.
    pub fn encode_json(&self, json: &[u8], out: &mut Vec<u8>) -> Result<(), EncodeError> {
        self.plan.encode_json(json, out)
    }

    /// Like [`Encoder::encode_json`] for a value already parsed.
    pub fn encode_value(&self, value: &serde_json::Value, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        self.plan.encode_root_value(value, out)
    }
}

/// Avro binary (written with `writer`) -> JSON text of the `reader` schema, applying schema resolution.
pub struct Decoder {
    plan: decode::DPlan,
}

impl Decoder {
    /// Fails when the pair cannot be resolved (e.g. a reader field without default missing in the writer).
    pub fn new(writer: &Schema, reader: &Schema) -> Result<Decoder, CodecError> {
        Ok(Decoder { plan: decode::DPlan::compile(writer, reader)? })
    }

    /// A decoder that reads with the schema the data was written with.
    pub fn identity(schema: &Schema) -> Result<Decoder, CodecError> {
        Decoder::new(schema, schema)
    }

    /// Appends the JSON text of the Avro body `avro` to `out`; the body must hold exactly one value.
    /// On error `out` is left as it was.
    ///
    /// The JSON may not exceed [`Decoder::default_max_json`] bytes for this input: reader defaults and
    /// zero-size items (nulls, empty records) can otherwise turn a few bytes into gigabytes.
    pub fn decode_to_json(&self, avro: &[u8], out: &mut Vec<u8>) -> Result<(), DecodeError> {
        self.plan.decode(avro, out, Self::default_max_json(avro.len()))
    }

    /// Like [`Decoder::decode_to_json`] with an explicit bound on the JSON written.
    pub fn decode_to_json_capped(&self, avro: &[u8], out: &mut Vec<u8>, max_json: usize) -> Result<(), DecodeError> {
        self.plan.decode(avro, out, max_json)
    }

    /// The default bound on the JSON of one value: 1 MiB plus 64 bytes per input byte.
    pub fn default_max_json(avro_len: usize) -> usize {
        (1 << 20) + avro_len.saturating_mul(64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn codecs_are_send_and_sync() {
        assert_send_sync::<Encoder>();
        assert_send_sync::<Decoder>();
    }
}
