//! Error types. Messages are lowercase and name the field path (`request.latency_ms`, `items[2].name`,
//! `tags.env`) where there is one.

use std::fmt;

/// A schema (or writer/reader schema pair) that cannot be compiled into a codec.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// A named type is referenced but never defined.
    #[error("schema references unknown type `{0}`")]
    UnknownType(String),
    /// A default value does not fit its field's schema.
    #[error("invalid default for field `{field}`: {problem}")]
    InvalidDefault { field: String, problem: String },
    /// The writer's data cannot be read with the reader schema.
    #[error("cannot read writer schema as reader schema at {}: {problem}", at(path))]
    Incompatible { path: String, problem: String },
    /// A reader field is absent from the writer and has no default.
    #[error("reader field `{0}` is not in the writer schema and has no default")]
    MissingDefault(String),
}

fn at(path: &str) -> String {
    if path.is_empty() { "the top level".to_string() } else { format!("`{path}`") }
}

/// One step of a path inside a value.
#[derive(Debug, Clone)]
pub(crate) enum Seg<'a> {
    Field(&'a str),
    Index(usize),
    Key(String),
}

/// Renders segments collected innermost first (as errors unwind) into `a.b[3].c`.
pub(crate) fn render_path(segs_rev: &[Seg<'_>]) -> String {
    let mut s = String::new();
    for seg in segs_rev.iter().rev() {
        match seg {
            Seg::Field(name) => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(name);
            }
            Seg::Key(key) => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(key);
            }
            Seg::Index(i) => {
                use fmt::Write as _;
                let _ = write!(s, "[{i}]");
            }
        }
    }
    s
}

/// What went wrong while encoding one JSON value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EncodeErrorKind {
    /// The input is not valid JSON (serde_json's message, with line and column).
    Syntax(String),
    /// A value does not fit its schema (e.g. `expected long, got string "abc"`).
    Invalid(String),
    /// A record field is absent from the JSON object and has no default.
    MissingField,
    /// The JSON object has a member the record does not define.
    UnknownField,
    /// The JSON object has the same member twice.
    DuplicateField,
}

/// JSON that cannot be encoded with the writer schema.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.message())]
pub struct EncodeError {
    /// Path of the field concerned (`request.latency_ms`), empty at the top level.
    pub path: String,
    pub kind: EncodeErrorKind,
}

impl EncodeError {
    fn message(&self) -> String {
        let p = &self.path;
        match &self.kind {
            EncodeErrorKind::Syntax(m) => format!("invalid json: {m}"),
            EncodeErrorKind::Invalid(m) if p.is_empty() => m.clone(),
            EncodeErrorKind::Invalid(m) => format!("field `{p}`: {m}"),
            EncodeErrorKind::MissingField => format!("missing field `{p}` (no default)"),
            EncodeErrorKind::UnknownField => format!("field `{p}` is not in the schema"),
            EncodeErrorKind::DuplicateField => format!("duplicate field `{p}`"),
        }
    }
}

/// What went wrong while decoding one Avro body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeErrorKind {
    #[error("unexpected end of data")]
    Truncated,
    #[error("bad varint")]
    BadVarint,
    #[error("negative length {0}")]
    NegativeLength(i64),
    #[error("union branch index {index} out of range for {branches} branches")]
    BadUnionIndex { index: i64, branches: usize },
    #[error("writer union branch `{0}` has no match in the reader schema")]
    UnmatchedUnionBranch(String),
    #[error("enum index {index} out of range for {symbols} symbols")]
    BadEnumIndex { index: i64, symbols: usize },
    #[error("enum symbol `{0}` is unknown to the reader schema, which has no default")]
    UnknownEnumSymbol(String),
    #[error("invalid utf-8 in string")]
    InvalidUtf8,
    #[error("{0}")]
    InvalidValue(String),
    #[error("decoded JSON would exceed {0} bytes")]
    OutputTooLarge(usize),
    #[error("block of {0} items is larger than the data allows")]
    TooManyItems(i64),
    #[error("values nested deeper than {0} levels")]
    TooDeep(usize),
    #[error("{0} trailing bytes after the value")]
    TrailingBytes(usize),
}

/// Avro bytes that cannot be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", if path.is_empty() { kind.to_string() } else { format!("field `{path}`: {kind}") })]
pub struct DecodeError {
    /// Path of the field concerned, empty at the top level.
    pub path: String,
    pub kind: DecodeErrorKind,
}

/// A Confluent wire-format message that cannot be split into schema id and body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("empty message")]
    Empty,
    #[error("bad magic byte 0x{0:02x}, expected 0x00")]
    BadMagic(u8),
    #[error("message of {0} bytes is too short for the 4-byte schema id")]
    TooShort(usize),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_render_outermost_first() {
        let segs = [Seg::Field("name"), Seg::Index(2), Seg::Field("items"), Seg::Key("env".into()), Seg::Field("tags")];
        assert_eq!(render_path(&segs), "tags.env.items[2].name");
        assert_eq!(render_path(&[Seg::Index(0)]), "[0]");
    }

    #[test]
    fn messages() {
        let e = |path: &str, kind| EncodeError { path: path.into(), kind };
        assert_eq!(
            e("request.latency_ms", EncodeErrorKind::Invalid("expected long, got string \"abc\"".into())).to_string(),
            "field `request.latency_ms`: expected long, got string \"abc\""
        );
        assert_eq!(e("service", EncodeErrorKind::MissingField).to_string(), "missing field `service` (no default)");
        assert_eq!(e("color", EncodeErrorKind::UnknownField).to_string(), "field `color` is not in the schema");
        let d = DecodeError { path: "a.b".into(), kind: DecodeErrorKind::Truncated };
        assert_eq!(d.to_string(), "field `a.b`: unexpected end of data");
        let d = DecodeError { path: String::new(), kind: DecodeErrorKind::TrailingBytes(3) };
        assert_eq!(d.to_string(), "3 trailing bytes after the value");
        assert_eq!(WireError::BadMagic(5).to_string(), "bad magic byte 0x05, expected 0x00");
        let c = CodecError::Incompatible { path: String::new(), problem: "x".into() };
        assert_eq!(c.to_string(), "cannot read writer schema as reader schema at the top level: x");
    }
}
