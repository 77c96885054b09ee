//! JSON text -> Avro binary.
//!
//! The writer schema is compiled once into a [`Plan`]: an arena of nodes, records with a field-name lookup and
//! pre-encoded defaults. Encoding drives serde_json's streaming deserializer with a [`DeserializeSeed`] per
//! node that writes Avro bytes straight into the output; no `serde_json::Value` is built except for unions
//! that need to look at a whole value before choosing a branch, and for defaults at compile time.

use std::cell::Cell;
use std::collections::HashMap;
use std::fmt;

use apache_avro::Schema;
use serde::Deserialize;
use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer};
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use crate::error::{CodecError, EncodeError, EncodeErrorKind, Seg, render_path};
use crate::logical::{self, Unit};
use crate::names::{Names, branch_tags, full_name};
use crate::types::describe;

type NodeId = u32;

enum Node {
    Null,
    Boolean,
    Int,
    Long,
    Float,
    Double,
    Bytes,
    String,
    Uuid,
    Date,
    Time(Unit),
    Timestamp { unit: Unit, local: bool },
    Decimal { precision: usize, scale: usize, fixed: Option<usize> },
    BigDecimal,
    Duration,
    Fixed(usize),
    Enum { symbols: Vec<String>, lookup: HashMap<String, u32> },
    Array(NodeId),
    Map(NodeId),
    Record(Record),
    Union(Union),
}

struct Record {
    fields: Vec<Field>,
    lookup: HashMap<String, u32>,
}

struct Field {
    name: String,
    node: NodeId,
    /// The schema default (Avro JSON convention) and, once compiled, its encoding.
    default: Option<Value>,
    default_bytes: Option<Box<[u8]>>,
}

struct Union {
    branches: Vec<NodeId>,
    /// Names accepted in the tagged form `{"name": value}`, with their branch index.
    tags: Vec<(String, u32)>,
    /// The branch that takes objects when it is the only one and a record (streamed, no buffering).
    sole_record: Option<u32>,
    /// The branch that takes arrays when it is the only one.
    sole_array: Option<u32>,
}

impl Union {
    fn tag(&self, name: &str) -> Option<u32> {
        self.tags.iter().find(|(t, _)| t == name).map(|(_, i)| *i)
    }
}

/// A compiled writer schema.
pub(crate) struct Plan {
    nodes: Vec<Node>,
    /// How each node is named in messages.
    descs: Vec<String>,
    /// Named types by full name.
    named: HashMap<String, NodeId>,
    root: NodeId,
}

struct Compiler<'s> {
    names: Names<'s>,
    nodes: Vec<Node>,
    descs: Vec<String>,
    named: HashMap<String, NodeId>,
}

impl<'s> Compiler<'s> {
    fn compile(&mut self, schema: &'s Schema) -> Result<NodeId, CodecError> {
        let schema = self.names.deref(schema)?;
        let name = match schema {
            Schema::Record(r) => Some(full_name(&r.name)),
            Schema::Enum(e) => Some(full_name(&e.name)),
            Schema::Fixed(f) => Some(full_name(&f.name)),
            _ => None,
        };
        if let Some(id) = name.as_ref().and_then(|n| self.named.get(n)) {
            return Ok(*id);
        }
        let id = self.nodes.len() as NodeId;
        self.nodes.push(Node::Null);
        self.descs.push(describe(schema));
        if let Some(name) = name {
            self.named.insert(name, id);
        }
        let node = match schema {
            Schema::Null => Node::Null,
            Schema::Boolean => Node::Boolean,
            Schema::Int => Node::Int,
            Schema::Long => Node::Long,
            Schema::Float => Node::Float,
            Schema::Double => Node::Double,
            Schema::Bytes => Node::Bytes,
            Schema::String => Node::String,
            Schema::Uuid => Node::Uuid,
            Schema::Date => Node::Date,
            Schema::TimeMillis => Node::Time(Unit::Millis),
            Schema::TimeMicros => Node::Time(Unit::Micros),
            Schema::TimestampMillis => Node::Timestamp { unit: Unit::Millis, local: false },
            Schema::TimestampMicros => Node::Timestamp { unit: Unit::Micros, local: false },
            Schema::TimestampNanos => Node::Timestamp { unit: Unit::Nanos, local: false },
            Schema::LocalTimestampMillis => Node::Timestamp { unit: Unit::Millis, local: true },
            Schema::LocalTimestampMicros => Node::Timestamp { unit: Unit::Micros, local: true },
            Schema::LocalTimestampNanos => Node::Timestamp { unit: Unit::Nanos, local: true },
            Schema::Decimal(d) => Node::Decimal {
                precision: d.precision,
                scale: d.scale,
                fixed: match d.inner.as_ref() {
                    Schema::Fixed(f) => Some(f.size),
                    _ => None,
                },
            },
            Schema::BigDecimal => Node::BigDecimal,
            Schema::Duration => Node::Duration,
            Schema::Fixed(f) => Node::Fixed(f.size),
            Schema::Enum(e) => Node::Enum {
                symbols: e.symbols.clone(),
                lookup: e.symbols.iter().enumerate().map(|(i, s)| (s.clone(), i as u32)).collect(),
            },
            Schema::Array(a) => Node::Array(self.compile(&a.items)?),
            Schema::Map(m) => Node::Map(self.compile(&m.types)?),
            Schema::Record(r) => {
                let mut fields = Vec::with_capacity(r.fields.len());
                for f in &r.fields {
                    let node = self.compile(&f.schema)?;
                    fields.push(Field { name: f.name.clone(), node, default: f.default.clone(), default_bytes: None });
                }
                let lookup = fields.iter().enumerate().map(|(i, f)| (f.name.clone(), i as u32)).collect();
                Node::Record(Record { fields, lookup })
            }
            Schema::Union(u) => {
                let mut branches = Vec::new();
                let mut tags = Vec::new();
                for (i, v) in u.variants().iter().enumerate() {
                    branches.push(self.compile(v)?);
                    tags.extend(branch_tags(v).into_iter().map(|t| (t, i as u32)));
                }
                let takes_objects: Vec<u32> = (0..branches.len() as u32)
                    .filter(|&i| {
                        matches!(
                            self.nodes[branches[i as usize] as usize],
                            Node::Record(_) | Node::Map(_) | Node::Duration
                        )
                    })
                    .collect();
                let sole_record = match takes_objects[..] {
                    [i] if matches!(self.nodes[branches[i as usize] as usize], Node::Record(_)) => Some(i),
                    _ => None,
                };
                let arrays: Vec<u32> = (0..branches.len() as u32)
                    .filter(|&i| matches!(self.nodes[branches[i as usize] as usize], Node::Array(_)))
                    .collect();
                let sole_array = if let [i] = arrays[..] { Some(i) } else { None };
                let names: Vec<&str> = branches.iter().map(|b| self.descs[*b as usize].as_str()).collect();
                self.descs[id as usize] = match names[..] {
                    [one] => one.to_string(),
                    [a, b] => format!("{a} or {b}"),
                    _ => format!("one of {}", names.join(", ")),
                };
                Node::Union(Union { branches, tags, sole_record, sole_array })
            }
            // Names::deref never returns a reference; refuse rather than trust that here.
            Schema::Ref { name } => return Err(CodecError::UnknownType(full_name(name))),
        };
        self.nodes[id as usize] = node;
        Ok(id)
    }
}

impl Plan {
    pub(crate) fn compile(schema: &Schema) -> Result<Plan, CodecError> {
        let mut c =
            Compiler { names: Names::collect(schema), nodes: Vec::new(), descs: Vec::new(), named: HashMap::new() };
        let root = c.compile(schema)?;
        let mut plan = Plan { nodes: c.nodes, descs: c.descs, named: c.named, root };
        // Pre-encode every default, so a missing field costs one copy. Encoding a default may need the
        // defaults of nested fields; until they are stored they are encoded from their JSON (bounded depth).
        let mut encoded = Vec::new();
        for (id, node) in plan.nodes.iter().enumerate() {
            let Node::Record(r) = node else { continue };
            for (i, f) in r.fields.iter().enumerate() {
                let Some(default) = &f.default else { continue };
                let mut out = Vec::new();
                plan.encode_value(f.node, default, &mut out, true).map_err(|e| CodecError::InvalidDefault {
                    field: format!("{}.{}", plan.descs[id].trim_start_matches("record "), f.name),
                    problem: e.to_string(),
                })?;
                encoded.push((id, i, out.into_boxed_slice()));
            }
        }
        for (id, i, bytes) in encoded {
            if let Node::Record(r) = &mut plan.nodes[id] {
                r.fields[i].default_bytes = Some(bytes);
            }
        }
        Ok(plan)
    }

    /// The encoded default of field `field` of the record named `record`.
    pub(crate) fn default_bytes(&self, record: &str, field: usize) -> Option<&[u8]> {
        let Node::Record(r) = &self.nodes[*self.named.get(record)? as usize] else { return None };
        r.fields.get(field)?.default_bytes.as_deref()
    }

    pub(crate) fn encode_json(&self, json: &[u8], out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let start = out.len();
        // One UTF-8 check of the whole input is cheaper than serde_json's check of every string.
        let text = std::str::from_utf8(json).map_err(|e| EncodeError {
            path: String::new(),
            kind: EncodeErrorKind::Syntax(format!("input is not valid utf-8 at byte {}", e.valid_up_to())),
        })?;
        let mut ctx = Ctx::new(self, out, false);
        // serde_json's `StrRead` skips per-string UTF-8 checks, as the whole text was checked above.
        let mut de = serde_json::Deserializer::from_str(text);
        let res = Seed { ctx: &mut ctx, node: self.root }.deserialize(&mut de).and_then(|()| de.end());
        let res = res.map_err(|e| ctx.take_error(&e));
        drop(ctx);
        if res.is_err() {
            out.truncate(start);
        }
        res
    }

    /// Encodes an already parsed value; `convention` reads it in Avro's JSON convention (schema defaults).
    pub(crate) fn encode_value(
        &self,
        node: NodeId,
        value: &Value,
        out: &mut Vec<u8>,
        convention: bool,
    ) -> Result<(), EncodeError> {
        let start = out.len();
        let mut ctx = Ctx::new(self, out, convention);
        let res = Seed { ctx: &mut ctx, node }.deserialize(value).map_err(|e| ctx.take_error(&e));
        drop(ctx);
        if res.is_err() {
            out.truncate(start);
        }
        res
    }

    pub(crate) fn encode_root_value(&self, value: &Value, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        self.encode_value(self.root, value, out, false)
    }
}

#[inline]
pub(crate) fn put_long(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    if z < 0x80 {
        out.push(z as u8);
        return;
    }
    let mut buf = [0u8; 10];
    let mut i = 0;
    while z >= 0x80 {
        buf[i] = (z as u8) | 0x80;
        z >>= 7;
        i += 1;
    }
    buf[i] = z as u8;
    out.extend_from_slice(&buf[..=i]);
}

#[inline]
fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_long(out, b.len() as i64);
    out.extend_from_slice(b);
}

/// Inserts the block count of `count` items written from `start`, and the terminating empty block.
fn close_block(out: &mut Vec<u8>, start: usize, count: usize) {
    if count > 0 {
        let mut head = Vec::with_capacity(10);
        put_long(&mut head, count as i64);
        out.splice(start..start, head);
    }
    out.push(0);
}

/// Bytes of a JSON string in which every char is one byte (U+0000..U+00FF).
fn latin1(s: &str) -> Result<std::borrow::Cow<'_, [u8]>, Problem> {
    if s.is_ascii() {
        return Ok(s.as_bytes().into());
    }
    s.chars()
        .map(|c| u8::try_from(u32::from(c)).ok())
        .collect::<Option<Vec<u8>>>()
        .map(Into::into)
        .ok_or_else(|| Problem::Invalid(format!("string {} has a char above U+00FF, not a byte", quote(s))))
}

/// A string for messages, shortened.
fn quote(s: &str) -> String {
    const MAX: usize = 40;
    match s.char_indices().nth(MAX) {
        Some((i, _)) => format!("{:?}...", &s[..i]),
        None => format!("{s:?}"),
    }
}

#[derive(Clone, Copy)]
enum Scalar<'a> {
    Null,
    Bool(bool),
    I64(i64),
    U64(u64),
    F64(f64),
    Str(&'a str),
}

impl fmt::Display for Scalar<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scalar::Null => f.write_str("null"),
            Scalar::Bool(b) => write!(f, "boolean {b}"),
            Scalar::I64(v) => write!(f, "number {v}"),
            Scalar::U64(v) => write!(f, "number {v}"),
            Scalar::F64(v) => write!(f, "number {}", Num(*v)),
            Scalar::Str(s) => write!(f, "string {}", quote(s)),
        }
    }
}

/// A float for messages: plain digits when short, else scientific (`1e300`, not 301 digits).
struct Num(f64);

impl fmt::Display for Num {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let a = self.0.abs();
        if a != 0.0 && !(1e-6..1e16).contains(&a) { write!(f, "{:e}", self.0) } else { write!(f, "{}", self.0) }
    }
}

fn value_desc(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("boolean {b}"),
        Value::Number(n) => format!("number {n}"),
        Value::String(s) => format!("string {}", quote(s)),
        Value::Array(_) => "array".into(),
        Value::Object(_) => "object".into(),
    }
}

/// Why a scalar does not fit a node: the wrong JSON type, or a specific problem.
enum Problem {
    Mismatch,
    Invalid(String),
}

fn int_value(s: Scalar<'_>, min: i64, max: i64, what: &str) -> Result<i64, Problem> {
    let v: i128 = match s {
        Scalar::I64(v) => v.into(),
        Scalar::U64(v) => v.into(),
        // Integral numbers written with a fraction or exponent (`35.0`, `1e3`) are integers too.
        Scalar::F64(f) if f.fract() == 0.0 && f.abs() < 1e19 => f as i128,
        Scalar::F64(f) if f.fract() == 0.0 => {
            return Err(Problem::Invalid(format!("value {} out of range for {what}", Num(f))));
        }
        _ => return Err(Problem::Mismatch),
    };
    if v < i128::from(min) || v > i128::from(max) {
        return Err(Problem::Invalid(format!("value {v} out of range for {what}")));
    }
    Ok(v as i64)
}

fn float_value(s: Scalar<'_>) -> Result<f64, Problem> {
    match s {
        Scalar::I64(v) => Ok(v as f64),
        Scalar::U64(v) => Ok(v as f64),
        Scalar::F64(v) => Ok(v),
        Scalar::Str("NaN") => Ok(f64::NAN),
        Scalar::Str("Infinity") => Ok(f64::INFINITY),
        Scalar::Str("-Infinity") => Ok(f64::NEG_INFINITY),
        _ => Err(Problem::Mismatch),
    }
}

fn decimal_text(s: Scalar<'_>) -> Result<logical::DecimalText, Problem> {
    let r = match s {
        Scalar::Str(s) => logical::parse_decimal(s),
        Scalar::I64(v) => logical::parse_decimal(&v.to_string()),
        Scalar::U64(v) => logical::parse_decimal(&v.to_string()),
        Scalar::F64(v) if v.is_finite() => logical::parse_decimal(&v.to_string()),
        Scalar::F64(v) => Err(format!("{v} is not a decimal")),
        _ => return Err(Problem::Mismatch),
    };
    r.map_err(Problem::Invalid)
}

/// A failure being carried out of nested visitors; the path grows as it unwinds.
struct Failure<'p> {
    kind: EncodeErrorKind,
    segs: Vec<Seg<'p>>,
    /// A plain type mismatch of the value itself (not of something inside it): lets a union try the next
    /// branch and report "expected one of ..." rather than one branch's complaint.
    mismatch: bool,
}

/// Buffers for records whose fields arrive out of schema order, kept per thread between calls.
#[derive(Default)]
struct Scratch {
    /// Per field of each open out-of-order record (a stack): where its value was written, or `EMPTY_SLOT`.
    slots: Vec<(usize, usize)>,
    tmp: Vec<u8>,
}

const EMPTY_SLOT: (usize, usize) = (usize::MAX, 0);

thread_local! {
    static SCRATCH: Cell<Option<Box<Scratch>>> = const { Cell::new(None) };
}

/// Deepest nesting of defaults inside defaults (a recursive record's default can otherwise loop).
const MAX_DEFAULT_DEPTH: u32 = 64;

struct Ctx<'p, 'o> {
    plan: &'p Plan,
    out: &'o mut Vec<u8>,
    err: Option<Failure<'p>>,
    scratch: Option<Box<Scratch>>,
    convention: bool,
    depth: u32,
}

impl Drop for Ctx<'_, '_> {
    fn drop(&mut self) {
        if let Some(mut s) = self.scratch.take() {
            s.slots.clear();
            SCRATCH.with(|c| c.set(Some(s)));
        }
    }
}

impl<'p, 'o> Ctx<'p, 'o> {
    fn new(plan: &'p Plan, out: &'o mut Vec<u8>, convention: bool) -> Self {
        Ctx { plan, out, err: None, scratch: None, convention, depth: 0 }
    }

    fn scratch(&mut self) -> &mut Scratch {
        self.scratch.get_or_insert_with(|| SCRATCH.with(Cell::take).unwrap_or_default())
    }

    fn take_error(&mut self, e: &dyn fmt::Display) -> EncodeError {
        match self.err.take() {
            Some(f) => EncodeError { path: render_path(&f.segs), kind: f.kind },
            None => EncodeError { path: String::new(), kind: EncodeErrorKind::Syntax(e.to_string()) },
        }
    }

    fn fail<E: de::Error>(&mut self, kind: EncodeErrorKind, segs: Vec<Seg<'p>>, mismatch: bool) -> E {
        self.err = Some(Failure { kind, segs, mismatch });
        E::custom("sluice-avro: see the stored failure")
    }

    fn fail_problem<E: de::Error>(&mut self, node: NodeId, got: &dyn fmt::Display, p: Problem) -> E {
        match p {
            Problem::Mismatch => {
                let msg = format!("expected {}, got {got}", self.plan.descs[node as usize]);
                self.fail(EncodeErrorKind::Invalid(msg), Vec::new(), true)
            }
            Problem::Invalid(msg) => self.fail(EncodeErrorKind::Invalid(msg), Vec::new(), false),
        }
    }

    /// Adds the step the error passed through on its way out.
    fn push_seg(&mut self, seg: Seg<'p>) {
        if let Some(f) = &mut self.err {
            f.segs.push(seg);
            f.mismatch = false;
        }
    }

    fn scalar(&mut self, node: NodeId, s: Scalar<'_>) -> Result<(), Problem> {
        let out = &mut *self.out;
        match &self.plan.nodes[node as usize] {
            Node::Null => match s {
                Scalar::Null => {}
                _ => return Err(Problem::Mismatch),
            },
            Node::Boolean => match s {
                Scalar::Bool(b) => out.push(u8::from(b)),
                _ => return Err(Problem::Mismatch),
            },
            Node::Int => put_long(out, int_value(s, i32::MIN.into(), i32::MAX.into(), "int")?),
            Node::Long => put_long(out, int_value(s, i64::MIN, i64::MAX, "long")?),
            Node::Float => {
                let v = float_value(s)?;
                let f = v as f32;
                if v.is_finite() && !f.is_finite() {
                    return Err(Problem::Invalid(format!("value {} out of range for float", Num(v))));
                }
                out.extend_from_slice(&f.to_le_bytes());
            }
            Node::Double => out.extend_from_slice(&float_value(s)?.to_le_bytes()),
            Node::String => match s {
                Scalar::Str(v) => put_bytes(out, v.as_bytes()),
                _ => return Err(Problem::Mismatch),
            },
            Node::Bytes => match s {
                Scalar::Str(v) => put_bytes(out, &latin1(v)?),
                _ => return Err(Problem::Mismatch),
            },
            Node::Fixed(size) => match s {
                Scalar::Str(v) => {
                    let b = latin1(v)?;
                    if b.len() != *size {
                        return Err(Problem::Invalid(format!("expected {size} bytes for fixed, got {}", b.len())));
                    }
                    out.extend_from_slice(&b);
                }
                _ => return Err(Problem::Mismatch),
            },
            Node::Duration => match s {
                Scalar::Str(v) => {
                    let b = latin1(v)?;
                    if b.len() != 12 {
                        return Err(Problem::Invalid(format!("expected 12 bytes for duration, got {}", b.len())));
                    }
                    out.extend_from_slice(&b);
                }
                _ => return Err(Problem::Mismatch),
            },
            Node::Uuid => match s {
                Scalar::Str(v) => {
                    logical::check_uuid(v).map_err(Problem::Invalid)?;
                    put_bytes(out, v.as_bytes());
                }
                _ => return Err(Problem::Mismatch),
            },
            Node::Enum { symbols, lookup } => match s {
                // Small enums: a scan beats hashing the symbol.
                Scalar::Str(v) => match if symbols.len() <= 16 {
                    symbols.iter().position(|s| s == v).map(|i| i as u32)
                } else {
                    lookup.get(v).copied()
                } {
                    Some(i) => put_long(out, i64::from(i)),
                    None => {
                        return Err(Problem::Invalid(format!(
                            "unknown enum symbol {} (symbols: {})",
                            quote(v),
                            symbols.join(", ")
                        )));
                    }
                },
                _ => return Err(Problem::Mismatch),
            },
            Node::Date => {
                let days = match s {
                    Scalar::Str(v) => logical::parse_date(v).map_err(Problem::Invalid)?,
                    _ => int_value(s, i32::MIN.into(), i32::MAX.into(), "date")? as i32,
                };
                put_long(out, days.into());
            }
            Node::Time(unit) => {
                let v = match s {
                    Scalar::Str(v) => logical::parse_time(v, *unit).map_err(Problem::Invalid)?,
                    _ => {
                        let v = int_value(s, i64::MIN, i64::MAX, "time")?;
                        logical::check_time(v, *unit).map_err(Problem::Invalid)?;
                        v
                    }
                };
                put_long(out, v);
            }
            Node::Timestamp { unit, local } => {
                let v = match s {
                    Scalar::Str(v) => logical::parse_timestamp(v, *unit, *local).map_err(Problem::Invalid)?,
                    _ => int_value(s, i64::MIN, i64::MAX, "timestamp")?,
                };
                put_long(out, v);
            }
            Node::Decimal { precision, scale, fixed } => {
                let bytes = match s {
                    // Avro's JSON convention (defaults): the two's-complement bytes themselves.
                    Scalar::Str(v) if self.convention => latin1(v)?.into_owned(),
                    _ => decimal_text(s)?.to_bytes(*precision, *scale).map_err(Problem::Invalid)?,
                };
                match fixed {
                    Some(size) => {
                        let b = if self.convention && bytes.len() == *size {
                            Some(bytes)
                        } else {
                            logical::sign_extend(&bytes, *size)
                        };
                        let b = b.ok_or_else(|| Problem::Invalid(format!("decimal does not fit in {size} bytes")))?;
                        out.extend_from_slice(&b);
                    }
                    None => put_bytes(out, &bytes),
                }
            }
            Node::BigDecimal => {
                let (unscaled, scale) = decimal_text(s)?.to_big().map_err(Problem::Invalid)?;
                let mut inner = Vec::with_capacity(unscaled.len() + 12);
                put_bytes(&mut inner, &unscaled);
                put_long(&mut inner, scale);
                put_bytes(out, &inner);
            }
            Node::Array(_) | Node::Map(_) | Node::Record(_) => return Err(Problem::Mismatch),
            Node::Union(u) => return self.union_scalar(u, s),
        }
        Ok(())
    }

    /// The first branch the scalar fits.
    fn union_scalar(&mut self, u: &'p Union, s: Scalar<'_>) -> Result<(), Problem> {
        let mark = self.out.len();
        let mut specific = None;
        for (i, &b) in u.branches.iter().enumerate() {
            put_long(self.out, i as i64);
            match self.scalar(b, s) {
                Ok(()) => return Ok(()),
                Err(Problem::Mismatch) => {}
                Err(Problem::Invalid(m)) => {
                    specific.get_or_insert(m);
                }
            }
            self.out.truncate(mark);
        }
        Err(specific.map_or(Problem::Mismatch, Problem::Invalid))
    }

    /// Encodes an in-memory value at `node`, for unions that buffered it.
    fn value(&mut self, node: NodeId, v: &Value) -> Result<(), ()> {
        match (Seed { ctx: self, node }).deserialize(v) {
            Ok(()) => Ok(()),
            Err(e) => {
                if self.err.is_none() {
                    self.err = Some(Failure {
                        kind: EncodeErrorKind::Invalid(e.to_string()),
                        segs: Vec::new(),
                        mismatch: false,
                    });
                }
                Err(())
            }
        }
    }

    fn union_value(&mut self, node: NodeId, u: &'p Union, v: &Value) -> Result<(), ()> {
        if let Value::Object(m) = v
            && m.len() == 1
            && let Some((k, inner)) = m.iter().next()
            && let Some(t) = u.tag(k)
        {
            put_long(self.out, t.into());
            return self.value(u.branches[t as usize], inner);
        }
        let mark = self.out.len();
        let mut specific = None;
        for (i, &b) in u.branches.iter().enumerate() {
            put_long(self.out, i as i64);
            if self.value(b, v).is_ok() {
                return Ok(());
            }
            self.out.truncate(mark);
            if let Some(f) = self.err.take()
                && !f.mismatch
            {
                specific.get_or_insert(f);
            }
        }
        self.err = Some(specific.unwrap_or_else(|| Failure {
            kind: EncodeErrorKind::Invalid(format!(
                "expected {}, got {}",
                self.plan.descs[node as usize],
                value_desc(v)
            )),
            segs: Vec::new(),
            mismatch: true,
        }));
        Err(())
    }

    fn array<'de, A: SeqAccess<'de>>(&mut self, item: NodeId, mut seq: A) -> Result<(), A::Error> {
        let start = self.out.len();
        let mut n = 0;
        loop {
            match seq.next_element_seed(Seed { ctx: self, node: item }) {
                Ok(Some(())) => n += 1,
                Ok(None) => break,
                Err(e) => {
                    self.push_seg(Seg::Index(n));
                    return Err(e);
                }
            }
        }
        close_block(self.out, start, n);
        Ok(())
    }

    fn map<'de, A: MapAccess<'de>>(&mut self, value: NodeId, mut map: A) -> Result<(), A::Error> {
        let start = self.out.len();
        let mut n = 0;
        loop {
            let key_at = self.out.len();
            match map.next_key_seed(MapKeySeed { out: self.out }) {
                Ok(Some(())) => {}
                Ok(None) => break,
                Err(e) => return Err(e),
            }
            if let Err(e) = map.next_value_seed(Seed { ctx: self, node: value }) {
                let key = read_key(&self.out[key_at..]);
                self.push_seg(Seg::Key(key));
                return Err(e);
            }
            n += 1;
        }
        close_block(self.out, start, n);
        Ok(())
    }

    fn duration<'de, A: MapAccess<'de>>(&mut self, mut map: A) -> Result<(), A::Error> {
        let mut parts = [None::<u32>; 3];
        while let Some(key) = map.next_key::<String>()? {
            let slot = match key.as_str() {
                "months" => 0,
                "days" => 1,
                "millis" => 2,
                _ => return Err(self.fail(EncodeErrorKind::UnknownField, vec![Seg::Key(key)], false)),
            };
            let v: Value = map.next_value()?;
            match v.as_u64().and_then(|v| u32::try_from(v).ok()) {
                Some(v) => parts[slot] = Some(v),
                None => {
                    let msg = format!("expected an unsigned 32-bit integer, got {}", value_desc(&v));
                    return Err(self.fail(EncodeErrorKind::Invalid(msg), vec![Seg::Key(key)], false));
                }
            }
        }
        for (i, name) in ["months", "days", "millis"].into_iter().enumerate() {
            match parts[i] {
                Some(v) => self.out.extend_from_slice(&v.to_le_bytes()),
                None => return Err(self.fail(EncodeErrorKind::MissingField, vec![Seg::Field(name)], false)),
            }
        }
        Ok(())
    }

    /// Writes a missing field's default, or fails naming it.
    fn default_for<E: de::Error>(&mut self, f: &'p Field) -> Result<(), E> {
        if let Some(b) = &f.default_bytes {
            self.out.extend_from_slice(b);
            return Ok(());
        }
        let Some(default) = &f.default else {
            return Err(self.fail(EncodeErrorKind::MissingField, vec![Seg::Field(&f.name)], false));
        };
        // Only while compiling defaults: encode nested defaults from their JSON.
        if self.depth >= MAX_DEFAULT_DEPTH {
            let msg = "defaults nest too deeply (recursive default?)".to_string();
            return Err(self.fail(EncodeErrorKind::Invalid(msg), vec![Seg::Field(&f.name)], false));
        }
        self.depth += 1;
        let r = self.value(f.node, default);
        self.depth -= 1;
        r.map_err(|()| {
            self.push_seg(Seg::Field(&f.name));
            E::custom("sluice-avro: see the stored failure")
        })
    }

    /// Streams a JSON object into a record. Fields in schema order are written in place; from the first one
    /// out of order, fields are written after the in-order prefix and put in order at the end.
    fn record<'de, A: MapAccess<'de>>(
        &mut self,
        rec: &'p Record,
        mut map: A,
        mut first: Option<Key>,
    ) -> Result<(), A::Error> {
        let n = rec.fields.len();
        let mut next = 0usize;
        // Where the next member probably is: after the last one seen.
        let mut hint = 0usize;
        // Out of order: (base of this record's slots in the scratch stack, where the written tail starts).
        let mut ooo: Option<(usize, usize)> = None;
        loop {
            let key = match first.take() {
                Some(k) => k,
                None => match map.next_key_seed(KeySeed { rec, hint }) {
                    Ok(Some(k)) => k,
                    Ok(None) => break,
                    Err(e) => return Err(self.unwind_slots(ooo, e)),
                },
            };
            let i = match key {
                Key::Field(i) => i as usize,
                Key::Unknown(name) => {
                    let e = self.fail(EncodeErrorKind::UnknownField, vec![Seg::Key(name)], false);
                    return Err(self.unwind_slots(ooo, e));
                }
            };
            hint = i + 1;
            let f = &rec.fields[i];
            if ooo.is_none() && i == next {
                if let Err(e) = map.next_value_seed(Seed { ctx: self, node: f.node }) {
                    self.push_seg(Seg::Field(&f.name));
                    return Err(e);
                }
                next += 1;
                continue;
            }
            let (base, _) = *ooo.get_or_insert_with(|| {
                let tail = self.out.len();
                let slots = &mut self.scratch().slots;
                let base = slots.len();
                slots.resize(base + n, EMPTY_SLOT);
                (base, tail)
            });
            if i < next || self.scratch().slots[base + i] != EMPTY_SLOT {
                let e = self.fail(EncodeErrorKind::DuplicateField, vec![Seg::Field(&f.name)], false);
                return Err(self.unwind_slots(ooo, e));
            }
            let start = self.out.len();
            if let Err(e) = map.next_value_seed(Seed { ctx: self, node: f.node }) {
                self.push_seg(Seg::Field(&f.name));
                return Err(self.unwind_slots(ooo, e));
            }
            let end = self.out.len();
            self.scratch().slots[base + i] = (start, end);
        }
        let Some((base, tail)) = ooo else {
            for f in &rec.fields[next..] {
                self.default_for(f)?;
            }
            return Ok(());
        };
        let mut scratch = self.scratch.take().unwrap_or_default();
        scratch.tmp.clear();
        scratch.tmp.extend_from_slice(&self.out[tail..]);
        self.out.truncate(tail);
        let mut res = Ok(());
        for (i, f) in rec.fields.iter().enumerate().skip(next) {
            let (start, end) = scratch.slots[base + i];
            if start != EMPTY_SLOT.0 {
                self.out.extend_from_slice(&scratch.tmp[start - tail..end - tail]);
            } else if let Err(e) = self.default_for(f) {
                res = Err(e);
                break;
            }
        }
        scratch.slots.truncate(base);
        self.scratch = Some(scratch);
        res
    }

    /// Drops this record's slots from the scratch stack on the way out of an error.
    fn unwind_slots<E>(&mut self, ooo: Option<(usize, usize)>, e: E) -> E {
        if let Some((base, _)) = ooo {
            self.scratch().slots.truncate(base);
        }
        e
    }
}

/// Reads back the Avro string a map key was written as (for error paths only).
fn read_key(bytes: &[u8]) -> String {
    let mut r = crate::decode::Reader::new(bytes);
    match r.bytes() {
        Ok(b) => String::from_utf8_lossy(b).into_owned(),
        Err(_) => String::new(),
    }
}

/// Drives one node from any serde deserializer (streaming JSON text, or a buffered `Value`).
struct Seed<'c, 'p, 'o> {
    ctx: &'c mut Ctx<'p, 'o>,
    node: NodeId,
}

impl<'de> DeserializeSeed<'de> for Seed<'_, '_, '_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl Seed<'_, '_, '_> {
    fn scalar<E: de::Error>(self, s: Scalar<'_>) -> Result<(), E> {
        self.ctx.scalar(self.node, s).map_err(|p| self.ctx.fail_problem(self.node, &s, p))
    }

    fn mismatch<E: de::Error>(self, got: &str) -> E {
        self.ctx.fail_problem(self.node, &got, Problem::Mismatch)
    }
}

impl<'de> Visitor<'de> for Seed<'_, '_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.scalar(Scalar::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.scalar(Scalar::I64(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.scalar(Scalar::U64(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.scalar(Scalar::F64(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.scalar(Scalar::Str(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.scalar(Scalar::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        let plan = self.ctx.plan;
        match &plan.nodes[self.node as usize] {
            Node::Array(item) => self.ctx.array(*item, seq),
            Node::Union(u) => {
                if let Some(b) = u.sole_array
                    && let Node::Array(item) = &plan.nodes[u.branches[b as usize] as usize]
                {
                    put_long(self.ctx.out, b.into());
                    return self.ctx.array(*item, seq);
                }
                let v = Value::deserialize(SeqAccessDeserializer::new(seq))?;
                self.ctx.union_value(self.node, u, &v).map_err(|()| de::Error::custom("sluice-avro"))
            }
            _ => Err(self.mismatch("array")),
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let plan = self.ctx.plan;
        match &plan.nodes[self.node as usize] {
            Node::Record(rec) => self.ctx.record(rec, map, None),
            Node::Map(value) => self.ctx.map(*value, map),
            Node::Duration => self.ctx.duration(map),
            Node::Union(u) => {
                if let Some(b) = u.sole_record
                    && let Node::Record(rec) = &plan.nodes[u.branches[b as usize] as usize]
                {
                    let first = map.next_key_seed(KeySeed { rec, hint: 0 })?;
                    if let Some(Key::Unknown(name)) = &first
                        && let Some(t) = u.tag(name)
                    {
                        // Avro's tagged form, {"com.acme.Rec": {...}} or {"string": "x"}.
                        put_long(self.ctx.out, t.into());
                        if let Err(e) = map.next_value_seed(Seed { ctx: self.ctx, node: u.branches[t as usize] }) {
                            self.ctx.push_seg(Seg::Key(name.clone()));
                            return Err(e);
                        }
                        if map.next_key::<IgnoredAny>()?.is_some() {
                            let msg = "a tagged union value must be an object with exactly one member".to_string();
                            return Err(self.ctx.fail(EncodeErrorKind::Invalid(msg), Vec::new(), false));
                        }
                        return Ok(());
                    }
                    put_long(self.ctx.out, b.into());
                    return self.ctx.record(rec, map, first);
                }
                let v = Value::deserialize(MapAccessDeserializer::new(map))?;
                self.ctx.union_value(self.node, u, &v).map_err(|()| de::Error::custom("sluice-avro"))
            }
            _ => Err(self.mismatch("object")),
        }
    }
}

enum Key {
    Field(u32),
    Unknown(String),
}

/// Looks a member name up among a record's fields, trying the next field in schema order first.
struct KeySeed<'p> {
    rec: &'p Record,
    hint: usize,
}

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = Key;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Key, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_> {
    type Value = Key;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Key, E> {
        let fields = &self.rec.fields;
        if fields.get(self.hint).is_some_and(|f| f.name == v) {
            return Ok(Key::Field(self.hint as u32));
        }
        // Small records: a scan comparing lengths first beats hashing the key.
        if fields.len() <= 16 {
            let i = fields.iter().position(|f| f.name == v);
            return Ok(i.map_or_else(|| Key::Unknown(v.to_owned()), |i| Key::Field(i as u32)));
        }
        Ok(match self.rec.lookup.get(v) {
            Some(i) => Key::Field(*i),
            None => Key::Unknown(v.to_owned()),
        })
    }
}

/// Writes a map key as an Avro string.
struct MapKeySeed<'o> {
    out: &'o mut Vec<u8>,
}

impl<'de> DeserializeSeed<'de> for MapKeySeed<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for MapKeySeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a map key")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        put_bytes(self.out, v.as_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(schema: &str) -> Plan {
        Plan::compile(&Schema::parse_str(schema).unwrap()).unwrap()
    }

    fn encode(p: &Plan, json: &str) -> Vec<u8> {
        let mut out = Vec::new();
        p.encode_json(json.as_bytes(), &mut out).unwrap();
        out
    }

    #[test]
    fn varints_at_the_boundaries() {
        for (v, bytes) in [
            (0i64, &[0u8][..]),
            (-1, &[1]),
            (63, &[0x7e]),
            (-64, &[0x7f]),
            (64, &[0x80, 1]),
            (i64::MAX, &[0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1]),
            (i64::MIN, &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1]),
        ] {
            let mut out = Vec::new();
            put_long(&mut out, v);
            assert_eq!(out, bytes, "{v}");
            assert_eq!(crate::decode::Reader::new(&out).long(), Ok(v));
        }
    }

    #[test]
    fn block_counts_are_inserted_before_the_items() {
        let p = plan(r#"{"type":"array","items":"string"}"#);
        // 64 items need a two-byte count, so the items move.
        let items: Vec<String> = (0..64).map(|i| format!("\"{i}\"")).collect();
        let out = encode(&p, &format!("[{}]", items.join(",")));
        assert_eq!(out[..2], [0x80, 1]);
        assert_eq!(out[2..4], [2, b'0']);
        assert_eq!(out.last(), Some(&0));
        assert_eq!(encode(&p, "[]"), [0]);
    }

    #[test]
    fn nested_out_of_order_records_share_the_scratch_stack() {
        let p = plan(
            r#"{"type":"record","name":"A","fields":[{"name":"x","type":"int"},{"name":"y","type":"int"},
            {"name":"in","type":{"type":"array","items":{"type":"record","name":"B","fields":[
                {"name":"p","type":"int"},{"name":"q","type":"int","default":7}]}}}]}"#,
        );
        let expected = encode(&p, r#"{"x":1,"y":2,"in":[{"p":3,"q":4},{"p":5,"q":7}]}"#);
        for _ in 0..3 {
            assert_eq!(encode(&p, r#"{"in":[{"q":4,"p":3},{"p":5}],"y":2,"x":1}"#), expected);
            // A failure deep inside must leave the stack clean for the next event.
            let mut out = Vec::new();
            assert!(p.encode_json(br#"{"in":[{"q":4,"p":3},{"q":1,"zz":5}],"y":2,"x":1}"#, &mut out).is_err());
            assert!(out.is_empty());
        }
        SCRATCH.with(|c| {
            let s = c.take().expect("scratch returned to the thread");
            assert!(s.slots.is_empty());
            c.set(Some(s));
        });
    }

    #[test]
    fn floats_in_messages_stay_short() {
        assert_eq!(Num(1e300).to_string(), "1e300");
        assert_eq!(Num(1.5).to_string(), "1.5");
        assert_eq!(Num(0.0).to_string(), "0");
    }
}
