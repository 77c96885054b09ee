//! Compatibility levels and the Avro reader/writer check behind them.
//!
//! [`can_read`] says whether data written with one schema can be read with another, following the Avro schema
//! resolution rules as Avro's Java `SchemaCompatibility` (and so Confluent's registry) applies them: promotions
//! int→long→float→double and string↔bytes; records match by name (or a reader alias) and every reader field
//! must exist in the writer (by name or reader field alias) or have a default; enums need every writer symbol
//! unless the reader has a default symbol; fixed sizes must agree; a writer union needs every branch readable,
//! a reader union needs one branch that reads the writer. Logical types are checked as their underlying types.
//! Every refusal names the field (as a dotted path) and why.
//!
//! [`check`] applies a [`CompatibilityLevel`] to a new schema and the subject's earlier versions.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::str::FromStr;

use apache_avro::Schema;
use apache_avro::schema::{Alias, Name, RecordSchema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sluice_avro::types::{Kind, describe, kind};

use crate::error::SchemaError;

/// A subject's compatibility level, with Confluent's names and semantics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CompatibilityLevel {
    /// No checks.
    None,
    /// The new schema can read data written with the latest version.
    Backward,
    /// The new schema can read data written with every earlier version.
    BackwardTransitive,
    /// The latest version can read data written with the new schema.
    Forward,
    /// Every earlier version can read data written with the new schema.
    ForwardTransitive,
    /// Backward and forward against the latest version.
    Full,
    /// Backward and forward against every earlier version.
    FullTransitive,
}

impl CompatibilityLevel {
    pub const ALL: [CompatibilityLevel; 7] = [
        CompatibilityLevel::None,
        CompatibilityLevel::Backward,
        CompatibilityLevel::BackwardTransitive,
        CompatibilityLevel::Forward,
        CompatibilityLevel::ForwardTransitive,
        CompatibilityLevel::Full,
        CompatibilityLevel::FullTransitive,
    ];

    /// The level when none is configured (as in Confluent's registry).
    pub const DEFAULT: CompatibilityLevel = CompatibilityLevel::Backward;

    pub fn as_str(self) -> &'static str {
        match self {
            CompatibilityLevel::None => "NONE",
            CompatibilityLevel::Backward => "BACKWARD",
            CompatibilityLevel::BackwardTransitive => "BACKWARD_TRANSITIVE",
            CompatibilityLevel::Forward => "FORWARD",
            CompatibilityLevel::ForwardTransitive => "FORWARD_TRANSITIVE",
            CompatibilityLevel::Full => "FULL",
            CompatibilityLevel::FullTransitive => "FULL_TRANSITIVE",
        }
    }

    /// Checked against every earlier version rather than only the latest.
    pub fn is_transitive(self) -> bool {
        matches!(
            self,
            CompatibilityLevel::BackwardTransitive
                | CompatibilityLevel::ForwardTransitive
                | CompatibilityLevel::FullTransitive
        )
    }

    /// The new schema must read the old ones' data.
    pub fn checks_backward(self) -> bool {
        matches!(
            self,
            CompatibilityLevel::Backward
                | CompatibilityLevel::BackwardTransitive
                | CompatibilityLevel::Full
                | CompatibilityLevel::FullTransitive
        )
    }

    /// The old schemas must read the new one's data.
    pub fn checks_forward(self) -> bool {
        matches!(
            self,
            CompatibilityLevel::Forward
                | CompatibilityLevel::ForwardTransitive
                | CompatibilityLevel::Full
                | CompatibilityLevel::FullTransitive
        )
    }
}

impl fmt::Display for CompatibilityLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CompatibilityLevel {
    type Err = SchemaError;

    /// Case-insensitive, as Confluent's registry accepts `full` and `FULL` alike.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        CompatibilityLevel::ALL
            .into_iter()
            .find(|l| l.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| SchemaError::InvalidCompatibilityLevel(s.to_string()))
    }
}

impl Serialize for CompatibilityLevel {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for CompatibilityLevel {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// What kind of problem a reader has with a writer's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IncompatibilityKind {
    /// The reader's type cannot read the writer's (and no promotion applies).
    TypeMismatch,
    /// Named types (record, enum, fixed) with different names and no matching reader alias.
    NameMismatch,
    /// A reader field missing in the writer has no default.
    MissingDefault,
    /// Writer enum symbols the reader lacks, and the reader enum has no default.
    MissingEnumSymbols,
    /// Fixed types of different sizes.
    FixedSizeMismatch,
    /// A writer type that no branch of the reader union reads.
    MissingUnionBranch,
}

/// One reason a reader cannot read a writer's data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incompatibility {
    pub kind: IncompatibilityKind,
    /// Dotted path of the field from the top-level type (`""` for the top level; `[]` for array items, `{}` for
    /// map values).
    pub path: String,
    /// What is wrong, naming the field.
    pub message: String,
}

impl fmt::Display for Incompatibility {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Every reason `reader` cannot read data written with `writer`; empty when it can.
pub fn can_read(writer: &Schema, reader: &Schema) -> Vec<Incompatibility> {
    let mut w_names = HashMap::new();
    collect_names(writer, &mut w_names);
    let mut r_names = HashMap::new();
    collect_names(reader, &mut r_names);
    let mut checker = Checker { w_names: &w_names, r_names: &r_names, checked: HashSet::new(), out: Vec::new() };
    checker.check(writer, reader, "");
    checker.out
}

/// An earlier version of a subject, for [`check`].
#[derive(Debug, Clone, Copy)]
pub struct Previous<'a> {
    pub version: u32,
    pub schema: &'a Schema,
}

/// Checks `new` against a subject's earlier versions (`previous`, oldest first; soft-deleted versions already left
/// out) under `level`: only the newest for a non-transitive level, all of them (newest first) for a transitive
/// one. Returns one message per problem found; empty means compatible.
pub fn check(level: CompatibilityLevel, new: &Schema, previous: &[Previous<'_>]) -> Vec<String> {
    let against: Vec<&Previous> =
        if level.is_transitive() { previous.iter().rev().collect() } else { previous.last().into_iter().collect() };
    let mut messages = Vec::new();
    for p in against {
        let old = format!("version {}", p.version);
        if level.checks_backward() {
            for i in can_read(p.schema, new) {
                messages.push(format!("{} (reader: the new schema, writer: {old})", i.message));
            }
        }
        if level.checks_forward() {
            for i in can_read(new, p.schema) {
                messages.push(format!("{} (reader: {old}, writer: the new schema)", i.message));
            }
        }
    }
    messages
}

/// Every named type defined in `schema`, by full name.
fn collect_names<'a>(schema: &'a Schema, names: &mut HashMap<String, &'a Schema>) {
    match schema {
        Schema::Record(r) if names.insert(r.name.fullname(None), schema).is_none() => {
            for f in &r.fields {
                collect_names(&f.schema, names);
            }
        }
        Schema::Enum(e) => {
            names.insert(e.name.fullname(None), schema);
        }
        Schema::Fixed(f) => {
            names.insert(f.name.fullname(None), schema);
        }
        Schema::Decimal(d) => {
            if let Schema::Fixed(f) = &*d.inner {
                names.insert(f.name.fullname(None), schema);
            }
        }
        Schema::Array(a) => collect_names(&a.items, names),
        Schema::Map(m) => collect_names(&m.types, names),
        Schema::Union(u) => u.variants().iter().for_each(|v| collect_names(v, names)),
        _ => {}
    }
}

struct Checker<'a> {
    w_names: &'a HashMap<String, &'a Schema>,
    r_names: &'a HashMap<String, &'a Schema>,
    /// Record pairs being checked, so recursive types terminate.
    checked: HashSet<(String, String)>,
    out: Vec<Incompatibility>,
}

/// A schema as the resolution rules see it: logical types as their underlying types, references resolved.
/// A [`Kind::Ref`] left over names a type the schema does not define (cannot happen for a parsed schema).
fn view<'a>(s: &'a Schema, names: &HashMap<String, &'a Schema>) -> Kind<'a> {
    match kind(s) {
        Kind::Ref(name) => match names.get(&name.fullname(None)) {
            Some(target) if !matches!(target, Schema::Ref { .. }) => kind(target),
            _ => Kind::Ref(name),
        },
        k => k,
    }
}

/// `"field `a.b`: "`; `"top level: "` for the empty path, `"top level `[]`: "` for a top-level array's items.
fn at(path: &str) -> String {
    if path.is_empty() {
        "top level: ".to_string()
    } else if path.starts_with(['[', '{']) {
        format!("top level `{path}`: ")
    } else {
        format!("field `{path}`: ")
    }
}

fn names_match(writer: &Name, reader: &Name, reader_aliases: &[Alias]) -> bool {
    writer.name == reader.name
        || reader_aliases.iter().any(|a| {
            let full = a.fullname(reader.namespace.clone());
            full == writer.fullname(None) || a.name() == writer.name
        })
}

impl<'a> Checker<'a> {
    fn push(&mut self, kind: IncompatibilityKind, path: &str, message: String) {
        self.out.push(Incompatibility { kind, path: path.to_string(), message });
    }

    fn type_mismatch(&mut self, w: &Schema, r: &Schema, path: &str) {
        let msg = format!("{}reader type `{}` cannot read writer type `{}`", at(path), describe(r), describe(w));
        self.push(IncompatibilityKind::TypeMismatch, path, msg);
    }

    /// A checker for a trial (does this union branch fit?) that shares names and recursion state.
    fn trial(&self) -> Checker<'a> {
        Checker { w_names: self.w_names, r_names: self.r_names, checked: self.checked.clone(), out: Vec::new() }
    }

    fn check(&mut self, w: &'a Schema, r: &'a Schema, path: &str) {
        let (wv, rv) = (view(w, self.w_names), view(r, self.r_names));
        match (wv, rv) {
            (Kind::Ref(n), _) | (_, Kind::Ref(n)) => {
                let msg = format!("{}type `{}` is not defined", at(path), n.fullname(None));
                self.push(IncompatibilityKind::TypeMismatch, path, msg);
            }
            // A writer union: every branch the writer may have used must be readable.
            (Kind::Union(ws), _) => {
                for branch in ws {
                    self.check(branch, r, path);
                }
            }
            (_, Kind::Union(rs)) => self.check_reader_union(w, rs, r, path),
            (Kind::Null, Kind::Null)
            | (Kind::Boolean, Kind::Boolean)
            | (Kind::Int, Kind::Int | Kind::Long | Kind::Float | Kind::Double)
            | (Kind::Long, Kind::Long | Kind::Float | Kind::Double)
            | (Kind::Float, Kind::Float | Kind::Double)
            | (Kind::Double, Kind::Double)
            | (Kind::Bytes | Kind::String, Kind::Bytes | Kind::String) => {}
            (Kind::Array(wi), Kind::Array(ri)) => self.check(wi, ri, &format!("{path}[]")),
            (Kind::Map(wv), Kind::Map(rv)) => self.check(wv, rv, &format!("{path}{{}}")),
            (Kind::Fixed { name: wn, size: ws, .. }, Kind::Fixed { name: rn, aliases: ra, size: rs }) => {
                if let (Some(wn), Some(rn)) = (wn, rn)
                    && !names_match(wn, rn, ra)
                {
                    self.name_mismatch("fixed", wn, rn, path);
                } else if ws != rs {
                    let name = rn.or(wn).map_or_else(|| "duration".to_string(), |n| n.fullname(None));
                    let msg = format!("{}reader fixed `{name}` has size {rs} but the writer's has size {ws}", at(path));
                    self.push(IncompatibilityKind::FixedSizeMismatch, path, msg);
                }
            }
            (Kind::Enum(we), Kind::Enum(re)) => {
                if !names_match(&we.name, &re.name, re.aliases.as_deref().unwrap_or_default()) {
                    self.name_mismatch("enum", &we.name, &re.name, path);
                    return;
                }
                let missing: Vec<&str> =
                    we.symbols.iter().filter(|s| !re.symbols.contains(s)).map(String::as_str).collect();
                let has_default = re.default.as_ref().is_some_and(|d| re.symbols.contains(d));
                if !missing.is_empty() && !has_default {
                    let msg = format!(
                        "{}reader enum `{}` lacks writer symbols [{}] and has no default symbol",
                        at(path),
                        re.name.fullname(None),
                        missing.join(", ")
                    );
                    self.push(IncompatibilityKind::MissingEnumSymbols, path, msg);
                }
            }
            (Kind::Record(wr), Kind::Record(rr)) => self.check_record(wr, rr, path),
            _ => self.type_mismatch(w, r, path),
        }
    }

    fn name_mismatch(&mut self, kind: &str, w: &Name, r: &Name, path: &str) {
        let msg = format!(
            "{}reader {kind} `{}` does not match writer {kind} `{}` (names differ and no reader alias matches)",
            at(path),
            r.fullname(None),
            w.fullname(None)
        );
        self.push(IncompatibilityKind::NameMismatch, path, msg);
    }

    /// A non-union writer type and a reader union: some branch must read it. When none does, the problems with
    /// the closest branch (same kind and name) are reported, else the missing branch.
    fn check_reader_union(&mut self, w: &'a Schema, branches: &'a [Schema], r: &'a Schema, path: &str) {
        let mut closest = None;
        for b in branches {
            let mut t = self.trial();
            t.check(w, b, path);
            if t.out.is_empty() {
                self.checked = t.checked;
                return;
            }
            if closest.is_none() && same_named_kind(view(w, self.w_names), view(b, self.r_names)) {
                closest = Some(t.out);
            }
        }
        match closest {
            Some(problems) => self.out.extend(problems),
            None => {
                let msg = format!(
                    "{}writer type `{}` matches no branch of the reader union `{}`",
                    at(path),
                    describe(w),
                    describe(r)
                );
                self.push(IncompatibilityKind::MissingUnionBranch, path, msg);
            }
        }
    }

    fn check_record(&mut self, w: &'a RecordSchema, r: &'a RecordSchema, path: &str) {
        if !names_match(&w.name, &r.name, r.aliases.as_deref().unwrap_or_default()) {
            self.name_mismatch("record", &w.name, &r.name, path);
            return;
        }
        let key = (w.name.fullname(None), r.name.fullname(None));
        // Each (writer, reader) record pair is checked once per check: further up (a recursive type) or
        // elsewhere (a type referenced many times, which would otherwise cost exponential time).
        if !self.checked.insert(key) {
            return;
        }
        for field in &r.fields {
            let field_path = if path.is_empty() { field.name.clone() } else { format!("{path}.{}", field.name) };
            // By the reader field's name, then its aliases; never by the writer's aliases (apache_avro's `lookup`
            // holds those too), as Avro's resolution rules say.
            let by_name = |name: &str| w.lookup.get(name).map(|&i| &w.fields[i]).filter(|f| f.name == name);
            let writer_field = by_name(&field.name).or_else(|| field.aliases.iter().flatten().find_map(|a| by_name(a)));
            match writer_field {
                Some(wf) => self.check(&wf.schema, &field.schema, &field_path),
                None if field.default.is_none() => {
                    let msg = format!(
                        "reader field `{field_path}` has no default and is missing in the writer schema{}",
                        match &field.aliases {
                            Some(a) if !a.is_empty() => format!(" (also under its aliases {})", a.join(", ")),
                            _ => String::new(),
                        }
                    );
                    self.push(IncompatibilityKind::MissingDefault, &field_path, msg);
                }
                None => {}
            }
        }
    }
}

/// Both are records, enums or fixed types of the same name: the branch a reader union would pick.
fn same_named_kind(w: Kind<'_>, r: Kind<'_>) -> bool {
    match (w, r) {
        (Kind::Record(w), Kind::Record(r)) => w.name.name == r.name.name,
        (Kind::Enum(w), Kind::Enum(r)) => w.name.name == r.name.name,
        (Kind::Fixed { name: Some(w), .. }, Kind::Fixed { name: Some(r), .. }) => w.name == r.name,
        (Kind::Array(_), Kind::Array(_)) | (Kind::Map(_), Kind::Map(_)) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(text: &str) -> Schema {
        Schema::parse_str(text).unwrap()
    }

    fn record(fields: &str) -> Schema {
        s(&format!(r#"{{"type":"record","name":"R","namespace":"n","fields":[{fields}]}}"#))
    }

    #[test]
    fn levels_parse_case_insensitively_and_print_upper_case() {
        assert_eq!("full_transitive".parse::<CompatibilityLevel>().unwrap(), CompatibilityLevel::FullTransitive);
        assert_eq!("NONE".parse::<CompatibilityLevel>().unwrap().to_string(), "NONE");
        let e = "sideways".parse::<CompatibilityLevel>().unwrap_err();
        assert_eq!(e.error_code(), 42203);
        for l in CompatibilityLevel::ALL {
            assert_eq!(l.as_str().parse::<CompatibilityLevel>().unwrap(), l);
        }
    }

    #[test]
    fn messages_name_the_nested_field() {
        let w = record(
            r#"{"name":"customer","type":{"type":"record","name":"C","fields":[{"name":"age","type":"long"}]}}"#,
        );
        let r = record(
            r#"{"name":"customer","type":{"type":"record","name":"C","fields":[{"name":"age","type":"int"},{"name":"region","type":"string"}]}}"#,
        );
        let problems = can_read(&w, &r);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert_eq!(problems[0].path, "customer.age");
        assert_eq!(problems[0].message, "field `customer.age`: reader type `int` cannot read writer type `long`");
        assert_eq!(problems[1].kind, IncompatibilityKind::MissingDefault);
        assert_eq!(
            problems[1].message,
            "reader field `customer.region` has no default and is missing in the writer schema"
        );
    }

    #[test]
    fn recursive_types_terminate() {
        let a = s(
            r#"{"type":"record","name":"L","fields":[{"name":"v","type":"int"},{"name":"next","type":["null","L"]}]}"#,
        );
        let b = s(
            r#"{"type":"record","name":"L","fields":[{"name":"v","type":"long"},{"name":"next","type":["null","L"]}]}"#,
        );
        assert!(can_read(&a, &b).is_empty());
        let problems = can_read(&b, &a);
        assert!(!problems.is_empty());
        assert!(problems[0].message.contains("field `v`"), "{problems:?}");
    }

    #[test]
    fn arrays_maps_fixed_and_logical_types() {
        assert!(can_read(&s(r#"{"type":"array","items":"int"}"#), &s(r#"{"type":"array","items":"long"}"#)).is_empty());
        let p = can_read(&s(r#"{"type":"map","values":"long"}"#), &s(r#"{"type":"map","values":"int"}"#));
        assert_eq!(p[0].message, "top level `{}`: reader type `int` cannot read writer type `long`");
        let p = can_read(&s(r#""long""#), &s(r#""int""#));
        assert_eq!(p[0].message, "top level: reader type `int` cannot read writer type `long`");
        let p = can_read(
            &record(r#"{"name":"m","type":{"type":"map","values":"long"}}"#),
            &record(r#"{"name":"m","type":{"type":"map","values":"int"}}"#),
        );
        assert_eq!(p[0].path, "m{}");
        let p = can_read(&s(r#"{"type":"fixed","name":"F","size":8}"#), &s(r#"{"type":"fixed","name":"F","size":16}"#));
        assert_eq!(p[0].kind, IncompatibilityKind::FixedSizeMismatch);
        let p = can_read(&s(r#"{"type":"fixed","name":"F","size":8}"#), &s(r#"{"type":"fixed","name":"G","size":8}"#));
        assert_eq!(p[0].kind, IncompatibilityKind::NameMismatch);
        assert!(
            can_read(
                &s(r#"{"type":"fixed","name":"F","size":8}"#),
                &s(r#"{"type":"fixed","name":"G","aliases":["F"],"size":8}"#)
            )
            .is_empty()
        );
        // Logical types are read as their underlying types (as Avro's Java checker does).
        assert!(can_read(&s(r#""long""#), &s(r#"{"type":"long","logicalType":"timestamp-millis"}"#)).is_empty());
        assert!(can_read(&s(r#"{"type":"int","logicalType":"date"}"#), &s(r#""long""#)).is_empty());
        assert!(!can_read(&s(r#"{"type":"long","logicalType":"timestamp-millis"}"#), &s(r#""int""#)).is_empty());
        let dec = s(r#"{"type":"bytes","logicalType":"decimal","precision":10,"scale":2}"#);
        assert!(can_read(&s(r#""bytes""#), &dec).is_empty());
        assert!(can_read(&s(r#""string""#), &s(r#"{"type":"string","logicalType":"uuid"}"#)).is_empty());
    }

    #[test]
    fn record_names_and_aliases() {
        let a = s(r#"{"type":"record","name":"A","fields":[]}"#);
        let b = s(r#"{"type":"record","name":"B","fields":[]}"#);
        let b_alias = s(r#"{"type":"record","name":"B","aliases":["A"],"fields":[]}"#);
        assert_eq!(can_read(&a, &b)[0].kind, IncompatibilityKind::NameMismatch);
        assert!(can_read(&a, &b_alias).is_empty());
        // Namespaces are ignored, as Avro's Java checker compares unqualified names.
        let a_ns = s(r#"{"type":"record","name":"A","namespace":"x","fields":[]}"#);
        assert!(can_read(&a, &a_ns).is_empty());
    }

    #[test]
    fn unions_report_the_closest_branch() {
        let w = record(
            r#"{"name":"u","type":["null",{"type":"record","name":"X","fields":[{"name":"a","type":"long"}]}]}"#,
        );
        let r =
            record(r#"{"name":"u","type":["null",{"type":"record","name":"X","fields":[{"name":"a","type":"int"}]}]}"#);
        let p = can_read(&w, &r);
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].message, "field `u.a`: reader type `int` cannot read writer type `long`");
        let p =
            can_read(&record(r#"{"name":"u","type":"boolean"}"#), &record(r#"{"name":"u","type":["null","string"]}"#));
        assert_eq!(p[0].kind, IncompatibilityKind::MissingUnionBranch);
        assert_eq!(
            p[0].message,
            "field `u`: writer type `boolean` matches no branch of the reader union `[null, string]`"
        );
    }

    #[test]
    fn check_labels_versions_and_directions() {
        let v1 = record(r#"{"name":"a","type":"int"}"#);
        let v2 = record(r#"{"name":"a","type":"int"},{"name":"region","type":"string","default":"eu"}"#);
        let new = record(r#"{"name":"a","type":"int"},{"name":"region","type":"string"}"#);
        let prev = [Previous { version: 1, schema: &v1 }, Previous { version: 2, schema: &v2 }];
        assert!(check(CompatibilityLevel::Backward, &new, &prev).is_empty());
        assert!(check(CompatibilityLevel::None, &new, &prev).is_empty());
        let m = check(CompatibilityLevel::BackwardTransitive, &new, &prev);
        assert_eq!(
            m,
            vec![
                "reader field `region` has no default and is missing in the writer schema (reader: the new schema, writer: version 1)"
            ]
        );
        let m = check(CompatibilityLevel::Forward, &v1, &[Previous { version: 3, schema: &new }]);
        assert_eq!(
            m,
            vec![
                "reader field `region` has no default and is missing in the writer schema (reader: version 3, writer: the new schema)"
            ]
        );
    }
}
