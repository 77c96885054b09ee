//! Avro binary -> JSON text, with schema resolution.
//!
//! A writer/reader pair is compiled once into a [`DPlan`]: each node reads the writer's encoding and writes
//! the reader's JSON form, promotions and logical types included. Records become a list of operations in
//! writer order (read a field, or skip a writer-only field) with the JSON keys and the reader-only defaults
//! pre-rendered around them, so decoding a record is mostly copying.

use std::collections::HashMap;

use apache_avro::Schema;
use apache_avro::schema::{Alias, Name, RecordSchema};

use crate::encode::Plan;
use crate::error::{CodecError, DecodeError, DecodeErrorKind as K, Seg, render_path};
use crate::json;
use crate::logical::{self, Unit};
use crate::names::{Names, full_name};
use crate::types::{Kind, describe, kind};

type DId = u32;
type SId = u32;

/// Deepest nesting of records, arrays and maps decoded (serde_json's default limit, so the output can be
/// parsed back with default settings). Also bounds the stack for recursive schemas and hostile input.
const MAX_DEPTH: usize = 128;

/// Items that take no bytes (nulls, empty records) allowed per decode, so a tiny body cannot claim billions.
const MAX_ZERO_SIZE_ITEMS: usize = 1 << 20;

/// Cursor over Avro bytes. Every read is bounds-checked and returns an error instead of panicking.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    #[inline]
    fn varint(&mut self) -> Result<u64, K> {
        let mut pos = self.pos;
        let b = *self.buf.get(pos).ok_or(K::Truncated)?;
        if b < 0x80 {
            self.pos = pos + 1;
            return Ok(u64::from(b));
        }
        let mut v = u64::from(b & 0x7f);
        let mut shift = 7;
        loop {
            pos += 1;
            let b = *self.buf.get(pos).ok_or(K::Truncated)?;
            if shift == 63 && b > 1 {
                return Err(K::BadVarint);
            }
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                self.pos = pos + 1;
                return Ok(v);
            }
            shift += 7;
        }
    }

    #[inline]
    pub(crate) fn long(&mut self) -> Result<i64, K> {
        let z = self.varint()?;
        Ok((z >> 1) as i64 ^ -((z & 1) as i64))
    }

    #[inline]
    fn int(&mut self) -> Result<i32, K> {
        i32::try_from(self.long()?).map_err(|_| K::BadVarint)
    }

    #[inline]
    fn take(&mut self, n: usize) -> Result<&'a [u8], K> {
        if n > self.remaining() {
            return Err(K::Truncated);
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    #[inline]
    pub(crate) fn bytes(&mut self) -> Result<&'a [u8], K> {
        let n = self.long()?;
        let n = usize::try_from(n).map_err(|_| K::NegativeLength(n))?;
        self.take(n)
    }

    /// A string, written to `out` as JSON (UTF-8 checked while escaping).
    #[inline]
    fn json_str(&mut self, out: &mut Vec<u8>) -> Result<(), K> {
        let b = self.bytes()?;
        if json::write_utf8(out, b) { Ok(()) } else { Err(K::InvalidUtf8) }
    }

    fn f32(&mut self) -> Result<f32, K> {
        let b = self.take(4)?;
        Ok(f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn f64(&mut self) -> Result<f64, K> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(f64::from_le_bytes(a))
    }

    fn num(&mut self, src: Num) -> Result<i64, K> {
        match src {
            Num::Int => self.int().map(i64::from),
            Num::Long => self.long(),
        }
    }
}

/// How the writer stored an integer.
#[derive(Clone, Copy, Debug)]
enum Num {
    Int,
    Long,
}

/// How the writer stored a number read as a float or double.
#[derive(Clone, Copy, Debug)]
enum FSrc {
    Int,
    Long,
    Float,
    Double,
}

enum DNode {
    Null,
    Bool,
    Integer(Num),
    F32(FSrc),
    F64(FSrc),
    /// A string (UTF-8 checked), from a writer string or bytes.
    Str,
    /// Bytes in Avro's JSON form, from a writer bytes or string.
    Bytes,
    Fixed(usize),
    Date,
    Time(Num, Unit),
    Timestamp(Num, Unit),
    Decimal {
        precision: usize,
        scale: usize,
        fixed: Option<usize>,
    },
    BigDecimal,
    Duration,
    /// Per writer symbol: the reader's JSON text for it, or the symbol the reader does not know.
    Enum(Vec<Result<Box<[u8]>, String>>),
    Array {
        item: DId,
        item_min: usize,
    },
    Map {
        value: DId,
        value_min: usize,
    },
    Record(DRecord),
    /// Per writer branch: the plan for it, or a description of the branch the reader cannot take.
    WriterUnion(Vec<Result<DId, String>>),
}

enum Op {
    /// Write `prefix` (separators, reader-only defaults, this field's key), then the field's value.
    Read { prefix: Box<[u8]>, node: DId, reader_pos: u32, name: String },
    /// A writer field the reader does not have.
    Skip { node: SId, name: String },
}

struct DRecord {
    ops: Vec<Op>,
    suffix: Box<[u8]>,
    /// Set when writer order differs from reader order: values are decoded in writer order, then placed.
    reorder: Option<Reorder>,
}

struct Reorder {
    /// Per reader field: its key with the separator before it.
    keys: Vec<Box<[u8]>>,
    /// Per reader field: its default's JSON text when the writer does not have it.
    defaults: Vec<Option<Box<[u8]>>>,
}

/// Skipping a writer value the reader does not want.
enum SNode {
    Zero,
    Fixed(usize),
    Varint,
    Bytes,
    Array(SId),
    Map(SId),
    Union(Vec<SId>),
    Record(Vec<(SId, String)>),
}

/// A compiled writer/reader pair.
pub(crate) struct DPlan {
    nodes: Vec<DNode>,
    skips: Vec<SNode>,
    /// Fewest bytes a value of each skip node (i.e. of each writer type) takes.
    smin: Vec<usize>,
    root: DId,
}

/// Whether a writer named type is the reader's: same full name, same unqualified name (the spec's rule), or
/// a reader alias naming it.
fn names_match(w: &Name, r: &Name, r_aliases: &[Alias]) -> bool {
    let wf = full_name(w);
    wf == full_name(r)
        || w.name == r.name
        || r_aliases.iter().any(|a| a.fully_qualified_name(&r.namespace).fullname(None) == wf)
}

fn aliases(a: &Option<Vec<Alias>>) -> &[Alias] {
    a.as_deref().unwrap_or(&[])
}

struct DCompiler<'w, 'r, 'p> {
    wnames: Names<'w>,
    rnames: Names<'r>,
    /// The reader schema compiled for encoding, which holds every reader default already encoded.
    reader_plan: Option<&'p Plan>,
    /// Decodes reader defaults (reader schema against itself), made when first needed.
    identity: Option<Box<DCompiler<'r, 'r, 'p>>>,
    reader_schema: &'r Schema,
    nodes: Vec<DNode>,
    skips: Vec<SNode>,
    smin: Vec<usize>,
    memo: HashMap<(String, String), DId>,
    skip_memo: HashMap<String, SId>,
    path: Vec<String>,
}

impl<'w, 'r, 'p> DCompiler<'w, 'r, 'p> {
    fn new(writer: &'w Schema, reader: &'r Schema, reader_plan: Option<&'p Plan>) -> Self {
        DCompiler {
            wnames: Names::collect(writer),
            rnames: Names::collect(reader),
            reader_plan,
            identity: None,
            reader_schema: reader,
            nodes: Vec::new(),
            skips: Vec::new(),
            smin: Vec::new(),
            memo: HashMap::new(),
            skip_memo: HashMap::new(),
            path: Vec::new(),
        }
    }

    fn incompatible(&self, problem: String) -> CodecError {
        CodecError::Incompatible { path: self.path.join("."), problem }
    }

    fn push(&mut self, node: DNode) -> DId {
        self.nodes.push(node);
        (self.nodes.len() - 1) as DId
    }

    /// Whether a writer type can be read as the reader type at all (shallow: names and kinds, not fields);
    /// `exact` leaves out promotions.
    fn matches(&self, w: &Schema, r: &Schema, exact: bool) -> bool {
        let (Ok(w), Ok(r)) = (self.wnames.deref(w), self.rnames.deref(r)) else { return false };
        match (kind(w), kind(r)) {
            (Kind::Null, Kind::Null)
            | (Kind::Boolean, Kind::Boolean)
            | (Kind::Int, Kind::Int)
            | (Kind::Long, Kind::Long)
            | (Kind::Float, Kind::Float)
            | (Kind::Double, Kind::Double)
            | (Kind::Bytes, Kind::Bytes)
            | (Kind::String, Kind::String)
            | (Kind::Array(_), Kind::Array(_))
            | (Kind::Map(_), Kind::Map(_)) => true,
            (Kind::Int, Kind::Long | Kind::Float | Kind::Double)
            | (Kind::Long, Kind::Float | Kind::Double)
            | (Kind::Float, Kind::Double)
            | (Kind::String, Kind::Bytes)
            | (Kind::Bytes, Kind::String) => !exact,
            (Kind::Fixed { name: wn, size: ws, .. }, Kind::Fixed { name: rn, aliases: ra, size: rs }) => {
                ws == rs
                    && match (wn, rn) {
                        (Some(wn), Some(rn)) => names_match(wn, rn, ra),
                        _ => true,
                    }
            }
            (Kind::Enum(we), Kind::Enum(re)) => names_match(&we.name, &re.name, aliases(&re.aliases)),
            (Kind::Record(wr), Kind::Record(rr)) => names_match(&wr.name, &rr.name, aliases(&rr.aliases)),
            _ => false,
        }
    }

    /// The reader union branch a writer type goes to: the first exact match, else the first promotion.
    fn pick_branch(&self, w: &Schema, branches: &'r [Schema]) -> Option<&'r Schema> {
        branches
            .iter()
            .find(|b| self.matches(w, b, true))
            .or_else(|| branches.iter().find(|b| self.matches(w, b, false)))
    }

    fn resolve(&mut self, w: &'w Schema, r: &'r Schema) -> Result<DId, CodecError> {
        let w = self.wnames.deref(w)?;
        let r = self.rnames.deref(r)?;
        if let Schema::Union(wu) = w {
            let mut branches = Vec::new();
            for wb in wu.variants() {
                let readable = match r {
                    Schema::Union(ru) => self.pick_branch(wb, ru.variants()).is_some(),
                    _ => self.matches(wb, r, false),
                };
                branches.push(if readable { Ok(self.resolve(wb, r)?) } else { Err(describe(wb)) });
            }
            if !branches.is_empty() && branches.iter().all(Result::is_err) {
                return Err(self.incompatible(format!(
                    "no branch of writer {} can be read as {}",
                    describe(w),
                    describe(r)
                )));
            }
            return Ok(self.push(DNode::WriterUnion(branches)));
        }
        if let Schema::Union(ru) = r {
            let Some(rb) = self.pick_branch(w, ru.variants()) else {
                return Err(self.incompatible(format!(
                    "writer {} matches no branch of reader {}",
                    describe(w),
                    describe(r)
                )));
            };
            return self.resolve(w, rb);
        }
        let mismatch = || format!("writer {} cannot be read as reader {}", describe(w), describe(r));
        let num = match kind(w) {
            Kind::Int => Some(Num::Int),
            Kind::Long => Some(Num::Long),
            _ => None,
        };
        let node = match r {
            Schema::Null => matches!(w, Schema::Null).then_some(DNode::Null),
            Schema::Boolean => matches!(w, Schema::Boolean).then_some(DNode::Bool),
            Schema::Int => matches!(kind(w), Kind::Int).then_some(DNode::Integer(Num::Int)),
            Schema::Long => num.map(DNode::Integer),
            Schema::Float => match kind(w) {
                Kind::Int => Some(DNode::F32(FSrc::Int)),
                Kind::Long => Some(DNode::F32(FSrc::Long)),
                Kind::Float => Some(DNode::F32(FSrc::Float)),
                _ => None,
            },
            Schema::Double => match kind(w) {
                Kind::Int => Some(DNode::F64(FSrc::Int)),
                Kind::Long => Some(DNode::F64(FSrc::Long)),
                Kind::Float => Some(DNode::F64(FSrc::Float)),
                Kind::Double => Some(DNode::F64(FSrc::Double)),
                _ => None,
            },
            Schema::String | Schema::Uuid => matches!(kind(w), Kind::String | Kind::Bytes).then_some(DNode::Str),
            Schema::Bytes => matches!(kind(w), Kind::String | Kind::Bytes).then_some(DNode::Bytes),
            Schema::Date => matches!(kind(w), Kind::Int).then_some(DNode::Date),
            Schema::TimeMillis => matches!(kind(w), Kind::Int).then_some(DNode::Time(Num::Int, Unit::Millis)),
            Schema::TimeMicros => num.map(|n| DNode::Time(n, Unit::Micros)),
            Schema::TimestampMillis | Schema::LocalTimestampMillis => num.map(|n| DNode::Timestamp(n, Unit::Millis)),
            Schema::TimestampMicros | Schema::LocalTimestampMicros => num.map(|n| DNode::Timestamp(n, Unit::Micros)),
            Schema::TimestampNanos | Schema::LocalTimestampNanos => num.map(|n| DNode::Timestamp(n, Unit::Nanos)),
            Schema::Decimal(rd) => {
                if let Schema::Decimal(wd) = w
                    && wd.scale != rd.scale
                {
                    return Err(self.incompatible(format!(
                        "writer decimal scale {} differs from reader scale {}",
                        wd.scale, rd.scale
                    )));
                }
                let fixed = match rd.inner.as_ref() {
                    Schema::Fixed(f) => Some(f.size),
                    _ => None,
                };
                let ok = match fixed {
                    Some(_) => self.matches(w, &rd.inner, true),
                    None => matches!(kind(w), Kind::Bytes),
                };
                ok.then_some(DNode::Decimal { precision: rd.precision, scale: rd.scale, fixed })
            }
            Schema::BigDecimal => matches!(kind(w), Kind::Bytes).then_some(DNode::BigDecimal),
            Schema::Duration => self.matches(w, r, true).then_some(DNode::Duration),
            Schema::Fixed(f) => self.matches(w, r, true).then_some(DNode::Fixed(f.size)),
            Schema::Enum(re) => match w {
                Schema::Enum(we) if self.matches(w, r, true) => {
                    let table = we
                        .symbols
                        .iter()
                        .map(|s| {
                            let sym = if re.symbols.contains(s) { Some(s) } else { re.default.as_ref() };
                            sym.map(|sym| {
                                let mut text = Vec::new();
                                json::write_str(&mut text, sym);
                                text.into_boxed_slice()
                            })
                            .ok_or_else(|| s.clone())
                        })
                        .collect();
                    Some(DNode::Enum(table))
                }
                _ => None,
            },
            Schema::Array(ra) => match w {
                Schema::Array(wa) => {
                    let id = self.push(DNode::Null);
                    let item = self.resolve(&wa.items, &ra.items)?;
                    let item_min = self.min_size(&wa.items)?;
                    self.nodes[id as usize] = DNode::Array { item, item_min };
                    return Ok(id);
                }
                _ => None,
            },
            Schema::Map(rm) => match w {
                Schema::Map(wm) => {
                    let id = self.push(DNode::Null);
                    let value = self.resolve(&wm.types, &rm.types)?;
                    // A map entry also holds its key, at least one byte.
                    let value_min = self.min_size(&wm.types)? + 1;
                    self.nodes[id as usize] = DNode::Map { value, value_min };
                    return Ok(id);
                }
                _ => None,
            },
            Schema::Record(rr) => match w {
                Schema::Record(wr) if self.matches(w, r, true) => return self.record(wr, rr),
                _ => None,
            },
            Schema::Union(_) | Schema::Ref { .. } => None,
        };
        match node {
            Some(node) => Ok(self.push(node)),
            None => Err(self.incompatible(mismatch())),
        }
    }

    fn record(&mut self, w: &'w RecordSchema, r: &'r RecordSchema) -> Result<DId, CodecError> {
        let key = (full_name(&w.name), full_name(&r.name));
        if let Some(id) = self.memo.get(&key) {
            return Ok(*id);
        }
        let id = self.push(DNode::Null);
        self.memo.insert(key, id);

        // Which reader field each writer field feeds: a reader field takes the writer field of its name, else
        // the first one named by its aliases; each writer field feeds at most one reader field.
        let mut reader_pos: Vec<Option<usize>> = vec![None; w.fields.len()];
        for (q, rf) in r.fields.iter().enumerate() {
            let by_name = w.fields.iter().position(|wf| wf.name == rf.name);
            let by_alias = || {
                w.fields.iter().enumerate().position(|(p, wf)| {
                    reader_pos[p].is_none()
                        && !r.fields.iter().any(|other| other.name == wf.name)
                        && rf.aliases.as_ref().is_some_and(|a| a.contains(&wf.name))
                })
            };
            if let Some(p) = by_name.or_else(by_alias) {
                reader_pos[p] = Some(q);
            }
        }
        let mut defaults: Vec<Option<Box<[u8]>>> = vec![None; r.fields.len()];
        for (q, rf) in r.fields.iter().enumerate() {
            if !reader_pos.contains(&Some(q)) {
                self.path.push(rf.name.clone());
                let text = self.default_text(r, q)?;
                self.path.pop();
                defaults[q] = Some(text);
            }
        }
        let keys: Vec<Box<[u8]>> = r
            .fields
            .iter()
            .enumerate()
            .map(|(q, rf)| {
                let mut k = vec![if q == 0 { b'{' } else { b',' }];
                json::write_str(&mut k, &rf.name);
                k.push(b':');
                k.into_boxed_slice()
            })
            .collect();
        let in_order = reader_pos.iter().flatten().is_sorted_by(|a, b| a < b);

        let mut ops = Vec::with_capacity(w.fields.len());
        let mut cursor = 0;
        for (wf, pos) in w.fields.iter().zip(&reader_pos) {
            match pos {
                Some(q) => {
                    let rf = &r.fields[*q];
                    self.path.push(rf.name.clone());
                    let node = self.resolve(&wf.schema, &rf.schema)?;
                    self.path.pop();
                    let mut prefix = Vec::new();
                    if in_order {
                        for d in cursor..*q {
                            prefix.extend_from_slice(&keys[d]);
                            prefix.extend_from_slice(defaults[d].as_deref().unwrap_or_default());
                        }
                        prefix.extend_from_slice(&keys[*q]);
                        cursor = q + 1;
                    }
                    ops.push(Op::Read { prefix: prefix.into(), node, reader_pos: *q as u32, name: rf.name.clone() });
                }
                None => ops.push(Op::Skip { node: self.skip(&wf.schema)?, name: wf.name.clone() }),
            }
        }
        let mut suffix = Vec::new();
        if r.fields.is_empty() {
            suffix.extend_from_slice(b"{}");
        } else {
            if in_order {
                for d in cursor..r.fields.len() {
                    suffix.extend_from_slice(&keys[d]);
                    suffix.extend_from_slice(defaults[d].as_deref().unwrap_or_default());
                }
            }
            suffix.push(b'}');
        }
        let reorder = (!in_order).then_some(Reorder { keys, defaults });
        self.nodes[id as usize] = DNode::Record(DRecord { ops, suffix: suffix.into(), reorder });
        Ok(id)
    }

    /// JSON text of a reader field's default: its Avro encoding (from the reader's encode plan), decoded as
    /// the reader type, so it reads exactly like a value that was present.
    fn default_text(&mut self, r: &'r RecordSchema, q: usize) -> Result<Box<[u8]>, CodecError> {
        let rf = &r.fields[q];
        let missing = || CodecError::MissingDefault(self.path.join("."));
        let bytes = self.reader_plan.and_then(|p| p.default_bytes(&full_name(&r.name), q)).ok_or_else(missing)?;
        let reader_schema = self.reader_schema;
        let compiler =
            self.identity.get_or_insert_with(|| Box::new(DCompiler::new(reader_schema, reader_schema, None)));
        let node = compiler.resolve(&rf.schema, &rf.schema)?;
        let plan = DPlan {
            nodes: std::mem::take(&mut compiler.nodes),
            skips: std::mem::take(&mut compiler.skips),
            smin: std::mem::take(&mut compiler.smin),
            root: node,
        };
        let mut out = Vec::new();
        let res = plan.decode(bytes, &mut out, crate::Decoder::default_max_json(bytes.len()));
        compiler.nodes = plan.nodes;
        compiler.skips = plan.skips;
        compiler.smin = plan.smin;
        res.map_err(|e| CodecError::InvalidDefault { field: self.path.join("."), problem: e.to_string() })?;
        Ok(out.into_boxed_slice())
    }

    fn min_size(&mut self, w: &'w Schema) -> Result<usize, CodecError> {
        let s = self.skip(w)?;
        Ok(self.smin[s as usize])
    }

    fn push_skip(&mut self, node: SNode, min: usize) -> SId {
        self.skips.push(node);
        self.smin.push(min);
        (self.skips.len() - 1) as SId
    }

    fn skip(&mut self, w: &'w Schema) -> Result<SId, CodecError> {
        let w = self.wnames.deref(w)?;
        let (node, min) = match kind(w) {
            Kind::Null => (SNode::Zero, 0),
            Kind::Boolean => (SNode::Fixed(1), 1),
            Kind::Float => (SNode::Fixed(4), 4),
            Kind::Double => (SNode::Fixed(8), 8),
            Kind::Fixed { size, .. } => (SNode::Fixed(size), size),
            Kind::Int | Kind::Long | Kind::Enum(_) => (SNode::Varint, 1),
            Kind::Bytes | Kind::String => (SNode::Bytes, 1),
            Kind::Array(items) => (SNode::Array(self.skip(items)?), 1),
            Kind::Map(values) => (SNode::Map(self.skip(values)?), 1),
            Kind::Union(variants) => {
                let mut branches = Vec::new();
                for b in variants {
                    branches.push(self.skip(b)?);
                }
                (SNode::Union(branches), 1)
            }
            Kind::Record(rec) => {
                let name = full_name(&rec.name);
                if let Some(id) = self.skip_memo.get(&name) {
                    return Ok(*id);
                }
                // Placeholder first, for recursive records (their minimum size is then underestimated,
                // which only loosens a sanity check).
                let id = self.push_skip(SNode::Zero, 0);
                self.skip_memo.insert(name, id);
                let mut fields = Vec::new();
                let mut min = 0usize;
                for f in &rec.fields {
                    let s = self.skip(&f.schema)?;
                    min = min.saturating_add(self.smin[s as usize]);
                    fields.push((s, f.name.clone()));
                }
                self.skips[id as usize] = SNode::Record(fields);
                self.smin[id as usize] = min;
                return Ok(id);
            }
            // Names::deref never returns a reference; refuse rather than trust that here.
            Kind::Ref(name) => return Err(CodecError::UnknownType(full_name(name))),
        };
        Ok(self.push_skip(node, min))
    }
}

impl DPlan {
    pub(crate) fn compile(writer: &Schema, reader: &Schema) -> Result<DPlan, CodecError> {
        let reader_plan = Plan::compile(reader)?;
        let mut c = DCompiler::new(writer, reader, Some(&reader_plan));
        let root = c.resolve(writer, reader)?;
        Ok(DPlan { nodes: c.nodes, skips: c.skips, smin: c.smin, root })
    }

    pub(crate) fn decode(&self, avro: &[u8], out: &mut Vec<u8>, max_json: usize) -> Result<(), DecodeError> {
        let start = out.len();
        let out_limit = start.saturating_add(max_json);
        let mut run = Run { plan: self, zero_budget: MAX_ZERO_SIZE_ITEMS, out_limit, max_json };
        let mut r = Reader::new(avro);
        let mut res = run.node(self.root, &mut r, out, 0);
        if res.is_ok() && r.remaining() > 0 {
            res = Err(fail(K::TrailingBytes(r.remaining())));
        }
        // Checked before every value too, so the overshoot before an error is at most one value's JSON.
        if res.is_ok() && out.len() > out_limit {
            res = Err(fail(K::OutputTooLarge(max_json)));
        }
        res.map_err(|f| {
            out.truncate(start);
            DecodeError { path: render_path(&f.segs), kind: f.kind }
        })
    }
}

struct Fail<'p> {
    kind: K,
    segs: Vec<Seg<'p>>,
}

type Res<'p> = Result<(), Box<Fail<'p>>>;

#[cold]
fn fail<'p>(kind: K) -> Box<Fail<'p>> {
    Box::new(Fail { kind, segs: Vec::new() })
}

impl<'p> From<K> for Box<Fail<'p>> {
    #[cold]
    fn from(kind: K) -> Self {
        fail(kind)
    }
}

fn with_seg<'p>(seg: Seg<'p>) -> impl FnOnce(Box<Fail<'p>>) -> Box<Fail<'p>> {
    move |mut f| {
        f.segs.push(seg);
        f
    }
}

struct Run<'p> {
    plan: &'p DPlan,
    zero_budget: usize,
    /// `out` may not grow past this: defaults and zero-size items can make JSON far larger than the input.
    out_limit: usize,
    max_json: usize,
}

impl<'p> Run<'p> {
    /// Validates a block's item count against the bytes left, or against the budget for empty items.
    fn block_len(&mut self, r: &mut Reader<'_>, min: usize) -> Result<usize, Box<Fail<'p>>> {
        let count = r.long()?;
        let count = if count < 0 {
            let size = r.long()?;
            if size < 0 {
                return Err(fail(K::NegativeLength(size)));
            }
            count.checked_neg().ok_or(K::TooManyItems(count))?
        } else {
            count
        };
        let n = usize::try_from(count).map_err(|_| K::TooManyItems(count))?;
        if min == 0 {
            self.zero_budget = self.zero_budget.checked_sub(n).ok_or(K::TooManyItems(count))?;
        } else if n > r.remaining() / min {
            return Err(fail(K::TooManyItems(count)));
        }
        Ok(n)
    }

    fn node(&mut self, id: DId, r: &mut Reader<'_>, out: &mut Vec<u8>, depth: usize) -> Res<'p> {
        if out.len() > self.out_limit {
            return Err(fail(K::OutputTooLarge(self.max_json)));
        }
        let plan = self.plan;
        match &plan.nodes[id as usize] {
            DNode::Null => out.extend_from_slice(b"null"),
            DNode::Bool => match r.take(1)?[0] {
                0 => out.extend_from_slice(b"false"),
                1 => out.extend_from_slice(b"true"),
                b => return Err(fail(K::InvalidValue(format!("invalid boolean byte 0x{b:02x}")))),
            },
            DNode::Integer(src) => json::write_i64(out, r.num(*src)?),
            DNode::F32(src) => {
                let v = match src {
                    FSrc::Int => r.int()? as f32,
                    FSrc::Long => r.long()? as f32,
                    _ => r.f32()?,
                };
                json::write_f32(out, v);
            }
            DNode::F64(src) => {
                let v = match src {
                    FSrc::Int => f64::from(r.int()?),
                    FSrc::Long => r.long()? as f64,
                    FSrc::Float => f64::from(r.f32()?),
                    FSrc::Double => r.f64()?,
                };
                json::write_f64(out, v);
            }
            DNode::Str => r.json_str(out)?,
            DNode::Bytes => json::write_latin1(out, r.bytes()?),
            DNode::Fixed(n) => json::write_latin1(out, r.take(*n)?),
            DNode::Date => logical::format_date(out, i64::from(r.int()?)),
            DNode::Time(src, unit) => {
                let v = r.num(*src)?;
                if logical::format_time(out, v, *unit).is_none() {
                    return Err(fail(K::InvalidValue(format!("time {v} is not within one day"))));
                }
            }
            DNode::Timestamp(src, unit) => logical::format_timestamp(out, r.num(*src)?, *unit),
            DNode::Decimal { precision, scale, fixed } => {
                let b = match fixed {
                    Some(n) => r.take(*n)?,
                    None => r.bytes()?,
                };
                let text = logical::format_decimal(b, *precision, *scale).map_err(K::InvalidValue)?;
                json::write_str(out, &text);
            }
            DNode::BigDecimal => {
                let mut inner = Reader::new(r.bytes()?);
                let unscaled = inner.bytes()?;
                let scale = inner.long()?;
                if inner.remaining() > 0 {
                    return Err(fail(K::InvalidValue("trailing bytes in big-decimal".into())));
                }
                let text = logical::format_big_decimal(unscaled, scale).map_err(K::InvalidValue)?;
                json::write_str(out, &text);
            }
            DNode::Duration => {
                let b = r.take(12)?;
                let part = |i: usize| i64::from(u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]));
                out.extend_from_slice(b"{\"months\":");
                json::write_i64(out, part(0));
                out.extend_from_slice(b",\"days\":");
                json::write_i64(out, part(4));
                out.extend_from_slice(b",\"millis\":");
                json::write_i64(out, part(8));
                out.push(b'}');
            }
            DNode::Enum(table) => {
                let i = r.long()?;
                match usize::try_from(i).ok().and_then(|i| table.get(i)) {
                    Some(Ok(text)) => out.extend_from_slice(text),
                    Some(Err(sym)) => return Err(fail(K::UnknownEnumSymbol(sym.clone()))),
                    None => return Err(fail(K::BadEnumIndex { index: i, symbols: table.len() })),
                }
            }
            DNode::WriterUnion(branches) => {
                let i = r.long()?;
                match usize::try_from(i).ok().and_then(|i| branches.get(i)) {
                    Some(Ok(node)) => return self.node(*node, r, out, depth),
                    Some(Err(name)) => return Err(fail(K::UnmatchedUnionBranch(name.clone()))),
                    None => return Err(fail(K::BadUnionIndex { index: i, branches: branches.len() })),
                }
            }
            DNode::Array { item, item_min } => {
                if depth >= MAX_DEPTH {
                    return Err(fail(K::TooDeep(MAX_DEPTH)));
                }
                out.push(b'[');
                let mut index = 0;
                loop {
                    let n = self.block_len(r, *item_min)?;
                    if n == 0 {
                        break;
                    }
                    for _ in 0..n {
                        if index > 0 {
                            out.push(b',');
                        }
                        self.node(*item, r, out, depth + 1).map_err(with_seg(Seg::Index(index)))?;
                        index += 1;
                    }
                }
                out.push(b']');
            }
            DNode::Map { value, value_min } => {
                if depth >= MAX_DEPTH {
                    return Err(fail(K::TooDeep(MAX_DEPTH)));
                }
                out.push(b'{');
                let mut first = true;
                loop {
                    let n = self.block_len(r, *value_min)?;
                    if n == 0 {
                        break;
                    }
                    for _ in 0..n {
                        if !first {
                            out.push(b',');
                        }
                        first = false;
                        let key = r.bytes()?;
                        if !json::write_utf8(out, key) {
                            return Err(fail(K::InvalidUtf8));
                        }
                        out.push(b':');
                        if let Err(mut f) = self.node(*value, r, out, depth + 1) {
                            f.segs.push(Seg::Key(String::from_utf8_lossy(key).into_owned()));
                            return Err(f);
                        }
                    }
                }
                out.push(b'}');
            }
            DNode::Record(rec) => {
                if depth >= MAX_DEPTH {
                    return Err(fail(K::TooDeep(MAX_DEPTH)));
                }
                match &rec.reorder {
                    None => {
                        for op in &rec.ops {
                            match op {
                                Op::Read { prefix, node, name, .. } => {
                                    out.extend_from_slice(prefix);
                                    self.node(*node, r, out, depth + 1).map_err(with_seg(Seg::Field(name)))?;
                                }
                                Op::Skip { node, name } => {
                                    self.skip(*node, r, depth + 1).map_err(with_seg(Seg::Field(name)))?
                                }
                            }
                        }
                        out.extend_from_slice(&rec.suffix);
                    }
                    Some(reorder) => self.reordered(rec, reorder, r, out, depth)?,
                }
            }
        }
        Ok(())
    }

    /// A record whose writer field order differs from the reader's: decode in writer order after the
    /// current output, then lay the fields out in reader order.
    fn reordered(
        &mut self,
        rec: &'p DRecord,
        ro: &'p Reorder,
        r: &mut Reader<'_>,
        out: &mut Vec<u8>,
        depth: usize,
    ) -> Res<'p> {
        let tail = out.len();
        let mut spans = vec![None; ro.keys.len()];
        for op in &rec.ops {
            match op {
                Op::Read { node, reader_pos, name, .. } => {
                    let start = out.len();
                    self.node(*node, r, out, depth + 1).map_err(with_seg(Seg::Field(name)))?;
                    spans[*reader_pos as usize] = Some((start - tail, out.len() - tail));
                }
                Op::Skip { node, name } => self.skip(*node, r, depth + 1).map_err(with_seg(Seg::Field(name)))?,
            }
        }
        let values = out.split_off(tail);
        for (q, key) in ro.keys.iter().enumerate() {
            out.extend_from_slice(key);
            match spans[q] {
                Some((a, b)) => out.extend_from_slice(&values[a..b]),
                None => out.extend_from_slice(ro.defaults[q].as_deref().unwrap_or(b"null")),
            }
        }
        out.extend_from_slice(&rec.suffix);
        Ok(())
    }

    fn skip(&mut self, id: SId, r: &mut Reader<'_>, depth: usize) -> Res<'p> {
        let plan = self.plan;
        match &plan.skips[id as usize] {
            SNode::Zero => {}
            SNode::Fixed(n) => {
                r.take(*n)?;
            }
            SNode::Varint => {
                r.varint()?;
            }
            SNode::Bytes => {
                r.bytes()?;
            }
            SNode::Union(branches) => {
                let i = r.long()?;
                match usize::try_from(i).ok().and_then(|i| branches.get(i)) {
                    Some(b) => return self.skip(*b, r, depth),
                    None => return Err(fail(K::BadUnionIndex { index: i, branches: branches.len() })),
                }
            }
            SNode::Record(fields) => {
                if depth >= MAX_DEPTH {
                    return Err(fail(K::TooDeep(MAX_DEPTH)));
                }
                for (f, name) in fields {
                    self.skip(*f, r, depth + 1).map_err(with_seg(Seg::Field(name)))?;
                }
            }
            SNode::Array(item) | SNode::Map(item) => {
                if depth >= MAX_DEPTH {
                    return Err(fail(K::TooDeep(MAX_DEPTH)));
                }
                let is_map = matches!(plan.skips[id as usize], SNode::Map(_));
                loop {
                    let count = r.long()?;
                    if count == 0 {
                        break;
                    }
                    if count < 0 {
                        // A block with its size in bytes can be skipped whole.
                        let size = r.long()?;
                        let size = usize::try_from(size).map_err(|_| K::NegativeLength(size))?;
                        r.take(size)?;
                        continue;
                    }
                    let min = plan.smin[*item as usize] + usize::from(is_map);
                    let n = usize::try_from(count).map_err(|_| K::TooManyItems(count))?;
                    if min == 0 {
                        self.zero_budget = self.zero_budget.checked_sub(n).ok_or(K::TooManyItems(count))?;
                    } else if n > r.remaining() / min {
                        return Err(fail(K::TooManyItems(count)));
                    }
                    for _ in 0..n {
                        if is_map {
                            r.bytes()?;
                        }
                        self.skip(*item, r, depth + 1)?;
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_refuses_overlong_and_truncated_varints() {
        assert_eq!(Reader::new(&[0x80; 9]).long(), Err(K::Truncated));
        // Ten bytes whose last carries more than the one remaining bit.
        let mut ten = [0xff; 10];
        ten[9] = 0x02;
        assert_eq!(Reader::new(&ten).long(), Err(K::BadVarint));
        ten[9] = 0x81;
        assert_eq!(Reader::new(&ten).long(), Err(K::BadVarint));
        assert_eq!(Reader::new(&[0x80, 0x80, 0x80, 0x80, 0x10]).int(), Err(K::BadVarint));
        assert_eq!(Reader::new(&[0xfe, 0xff, 0xff, 0xff, 0x0f]).int(), Ok(i32::MAX));
        assert_eq!(Reader::new(&[5]).bytes(), Err(K::NegativeLength(-3)));
        assert_eq!(Reader::new(&[6, 1]).bytes(), Err(K::Truncated));
    }

    #[test]
    fn in_order_records_are_one_pass_and_reordered_ones_are_not() {
        let w = Schema::parse_str(
            r#"{"type":"record","name":"R","fields":[{"name":"a","type":"int"},{"name":"b","type":"int"}]}"#,
        )
        .unwrap();
        let same = DPlan::compile(&w, &w).unwrap();
        let DNode::Record(rec) = &same.nodes[same.root as usize] else { panic!("record plan") };
        assert!(rec.reorder.is_none());
        let r = Schema::parse_str(
            r#"{"type":"record","name":"R","fields":[{"name":"b","type":"int"},{"name":"c","type":"int","default":3},{"name":"a","type":"int"}]}"#,
        )
        .unwrap();
        let swapped = DPlan::compile(&w, &r).unwrap();
        let DNode::Record(rec) = &swapped.nodes[swapped.root as usize] else { panic!("record plan") };
        assert!(rec.reorder.is_some());
        let mut out = Vec::new();
        swapped.decode(&[2, 4], &mut out, usize::MAX).unwrap();
        assert_eq!(out, br#"{"b":2,"c":3,"a":1}"#);
    }
}
