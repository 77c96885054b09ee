//! Property tests with apache-avro as the oracle, over random schemas and values:
//! - apache-avro writes a datum, Sluice's decoder reads it, and the JSON equals the expected natural JSON
//!   (computed here independently, dates and times by a naive calendar walk);
//! - Sluice's encoder writes that JSON (unions natural or tagged), apache-avro reads it back to the same value.

use std::collections::{BTreeMap, HashMap};

use apache_avro::types::Value as Avro;
use apache_avro::{Decimal, Schema};
use proptest::prelude::*;
use serde_json::{Value as Json, json};
use sluice_avro::{Decoder, Encoder};

/// A generated type. Named types get unique names afterwards (`assign_names`).
#[derive(Clone, Debug)]
enum Ty {
    Null,
    Bool,
    Int,
    Long,
    Float,
    Double,
    Bytes,
    Str,
    Date,
    TimeMillis,
    TimeMicros,
    TsMillis,
    TsMicros,
    LocalTsMicros,
    Decimal { precision: u32, scale: u32 },
    FixedDecimal { precision: u32, scale: u32 },
    Enum { name: String, symbols: usize },
    Fixed { name: String, size: usize },
    Array(Box<Ty>),
    Map(Box<Ty>),
    Record { name: String, fields: Vec<Ty> },
    Union(Vec<Ty>),
}

fn leaf() -> impl Strategy<Value = Ty> {
    prop_oneof![
        Just(Ty::Null),
        Just(Ty::Bool),
        Just(Ty::Int),
        Just(Ty::Long),
        Just(Ty::Float),
        Just(Ty::Double),
        Just(Ty::Bytes),
        Just(Ty::Str),
        Just(Ty::Date),
        Just(Ty::TimeMillis),
        Just(Ty::TimeMicros),
        Just(Ty::TsMillis),
        Just(Ty::TsMicros),
        Just(Ty::LocalTsMicros),
        (1u32..30).prop_flat_map(|p| (Just(p), 0..=p)).prop_map(|(precision, scale)| Ty::Decimal { precision, scale }),
        (1u32..18)
            .prop_flat_map(|p| (Just(p), 0..=p))
            .prop_map(|(precision, scale)| Ty::FixedDecimal { precision, scale }),
        (1usize..5).prop_map(|symbols| Ty::Enum { name: String::new(), symbols }),
        (1usize..6).prop_map(|size| Ty::Fixed { name: String::new(), size }),
    ]
}

/// Union branches from distinct groups, so natural JSON picks a branch unambiguously.
fn union_of(inner: impl Strategy<Value = Ty> + Clone) -> impl Strategy<Value = Ty> {
    let number = prop_oneof![Just(Ty::Int), Just(Ty::Long), Just(Ty::Float), Just(Ty::Double)];
    let text = prop_oneof![
        Just(Ty::Str),
        Just(Ty::Bytes),
        (1usize..4).prop_map(|symbols| Ty::Enum { name: String::new(), symbols }),
        (1usize..4).prop_map(|size| Ty::Fixed { name: String::new(), size }),
    ];
    let object = prop_oneof![
        prop::collection::vec(inner.clone(), 0..3).prop_map(|fields| Ty::Record { name: String::new(), fields }),
        inner.clone().prop_map(|t| Ty::Map(Box::new(t))),
    ];
    (
        any::<bool>(),
        any::<bool>(),
        prop::option::of(number),
        prop::option::of(text),
        prop::option::of(object),
        prop::option::of(inner.prop_map(|t| Ty::Array(Box::new(t)))),
        any::<u64>(),
    )
        .prop_map(|(null, boolean, number, text, object, array, shuffle)| {
            let mut branches: Vec<Ty> =
                [null.then_some(Ty::Null), boolean.then_some(Ty::Bool), number, text, object, array]
                    .into_iter()
                    .flatten()
                    .collect();
            if branches.is_empty() {
                branches.push(Ty::Null);
            }
            let n = branches.len();
            branches.rotate_left((shuffle as usize) % n);
            Ty::Union(branches)
        })
}

fn ty() -> impl Strategy<Value = Ty> {
    leaf().prop_recursive(4, 24, 5, |inner| {
        prop_oneof![
            inner.clone().prop_map(|t| Ty::Array(Box::new(t))),
            inner.clone().prop_map(|t| Ty::Map(Box::new(t))),
            prop::collection::vec(inner.clone(), 0..5).prop_map(|fields| Ty::Record { name: String::new(), fields }),
            union_of(inner.clone()),
        ]
    })
}

fn assign_names(t: &mut Ty, n: &mut usize) {
    match t {
        Ty::Enum { name, .. } | Ty::Fixed { name, .. } => {
            *n += 1;
            *name = format!("ns{}.N{n}", *n % 3);
        }
        Ty::Record { name, fields } => {
            *n += 1;
            *name = format!("ns{}.R{n}", *n % 3);
            fields.iter_mut().for_each(|f| assign_names(f, n));
        }
        Ty::Array(i) | Ty::Map(i) => assign_names(i, n),
        Ty::Union(b) => b.iter_mut().for_each(|b| assign_names(b, n)),
        _ => {}
    }
}

fn schema_json(t: &Ty) -> Json {
    match t {
        Ty::Null => json!("null"),
        Ty::Bool => json!("boolean"),
        Ty::Int => json!("int"),
        Ty::Long => json!("long"),
        Ty::Float => json!("float"),
        Ty::Double => json!("double"),
        Ty::Bytes => json!("bytes"),
        Ty::Str => json!("string"),
        Ty::Date => json!({"type":"int","logicalType":"date"}),
        Ty::TimeMillis => json!({"type":"int","logicalType":"time-millis"}),
        Ty::TimeMicros => json!({"type":"long","logicalType":"time-micros"}),
        Ty::TsMillis => json!({"type":"long","logicalType":"timestamp-millis"}),
        Ty::TsMicros => json!({"type":"long","logicalType":"timestamp-micros"}),
        Ty::LocalTsMicros => json!({"type":"long","logicalType":"local-timestamp-micros"}),
        Ty::Decimal { precision, scale } => {
            json!({"type":"bytes","logicalType":"decimal","precision":precision,"scale":scale})
        }
        Ty::FixedDecimal { precision, scale } => {
            json!({"type":"fixed","name":format!("D{precision}x{scale}"),"size":8,"logicalType":"decimal","precision":precision,"scale":scale})
        }
        Ty::Enum { name, symbols } => {
            json!({"type":"enum","name":name,"symbols":(0..*symbols).map(|i| format!("S{i}")).collect::<Vec<_>>()})
        }
        Ty::Fixed { name, size } => json!({"type":"fixed","name":name,"size":size}),
        Ty::Array(i) => json!({"type":"array","items":schema_json(i)}),
        Ty::Map(i) => json!({"type":"map","values":schema_json(i)}),
        Ty::Record { name, fields } => json!({"type":"record","name":name,"fields":fields.iter().enumerate()
            .map(|(i, f)| json!({"name":format!("f{i}"),"type":schema_json(f)})).collect::<Vec<_>>()}),
        Ty::Union(b) => Json::Array(b.iter().map(schema_json).collect()),
    }
}

/// The name of a branch in Avro's tagged union form.
fn tag(t: &Ty) -> String {
    match t {
        Ty::Null => "null".into(),
        Ty::Bool => "boolean".into(),
        Ty::Int => "int".into(),
        Ty::Long => "long".into(),
        Ty::Float => "float".into(),
        Ty::Double => "double".into(),
        Ty::Bytes => "bytes".into(),
        Ty::Str => "string".into(),
        Ty::Enum { name, .. } | Ty::Fixed { name, .. } | Ty::Record { name, .. } => name.clone(),
        Ty::Array(_) => "array".into(),
        Ty::Map(_) => "map".into(),
        other => unreachable!("not generated in unions: {other:?}"),
    }
}

fn latin1(b: &[u8]) -> Json {
    Json::String(b.iter().map(|&c| char::from(c)).collect())
}

fn is_leap(y: i64) -> bool {
    y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)
}

/// Calendar date of a day number by walking years and months (slow, obviously right).
fn naive_date(mut days: i64) -> String {
    let mut y = 1970;
    loop {
        let len = if is_leap(y) { 366 } else { 365 };
        if days < 0 {
            y -= 1;
            days += if is_leap(y) { 366 } else { 365 };
        } else if days >= len {
            days -= len;
            y += 1;
        } else {
            break;
        }
    }
    let months = [31, if is_leap(y) { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    let mut m = 0;
    while days >= months[m] {
        days -= months[m];
        m += 1;
    }
    format!("{y:04}-{:02}-{:02}", m + 1, days + 1)
}

fn naive_time(v: i64, per_sec: i64, digits: usize) -> String {
    let s = v / per_sec;
    format!("{:02}:{:02}:{:02}.{:0digits$}", s / 3600, s / 60 % 60, s % 60, v % per_sec)
}

fn naive_timestamp(v: i64, per_sec: i64, digits: usize) -> String {
    let per_day = 86_400 * per_sec;
    format!("{}T{}Z", naive_date(v.div_euclid(per_day)), naive_time(v.rem_euclid(per_day), per_sec, digits))
}

fn decimal_text(unscaled: i64, scale: u32) -> String {
    let digits = unscaled.unsigned_abs().to_string();
    let scale = scale as usize;
    let sign = if unscaled < 0 { "-" } else { "" };
    if scale == 0 {
        format!("{sign}{digits}")
    } else if digits.len() > scale {
        format!("{sign}{}.{}", &digits[..digits.len() - scale], &digits[digits.len() - scale..])
    } else {
        format!("{sign}0.{}{digits}", "0".repeat(scale - digits.len()))
    }
}

fn minimal_be(v: i64) -> Vec<u8> {
    let b = v.to_be_bytes();
    let mut start = 0;
    while start < 7 && ((b[start] == 0 && b[start + 1] < 0x80) || (b[start] == 0xff && b[start + 1] >= 0x80)) {
        start += 1;
    }
    b[start..].to_vec()
}

fn bounded(precision: u32) -> i64 {
    10i64.saturating_pow(precision.min(18)) - 1
}

const DAY_RANGE: i64 = 60_000;

/// A value of the type: (apache-avro's value, the decoder's expected JSON, JSON for the encoder).
type Gen = (Avro, Json, Json);

fn value(t: &Ty) -> BoxedStrategy<Gen> {
    let same = |a: Avro, j: Json| (a, j.clone(), j);
    match t.clone() {
        Ty::Null => Just((Avro::Null, Json::Null, Json::Null)).boxed(),
        Ty::Bool => any::<bool>().prop_map(move |b| same(Avro::Boolean(b), json!(b))).boxed(),
        Ty::Int => any::<i32>().prop_map(move |v| same(Avro::Int(v), json!(v))).boxed(),
        Ty::Long => any::<i64>().prop_map(move |v| same(Avro::Long(v), json!(v))).boxed(),
        Ty::Float => (prop::num::f32::NORMAL | prop::num::f32::ZERO | prop::num::f32::SUBNORMAL)
            // Decoded text is compared as an f32 (ties between equally short forms may go either way).
            .prop_map(move |v| (Avro::Float(v), json!({ F32: v }), json!(v.to_string().parse::<f64>().unwrap())))
            .boxed(),
        Ty::Double => (prop::num::f64::NORMAL | prop::num::f64::ZERO | prop::num::f64::SUBNORMAL)
            .prop_map(move |v| same(Avro::Double(v), json!(v)))
            .boxed(),
        Ty::Bytes => {
            prop::collection::vec(any::<u8>(), 0..8).prop_map(move |b| same(Avro::Bytes(b.clone()), latin1(&b))).boxed()
        }
        Ty::Str => any::<String>().prop_map(move |s| same(Avro::String(s.clone()), json!(s))).boxed(),
        Ty::Date => {
            (-DAY_RANGE..DAY_RANGE).prop_map(|d| (Avro::Date(d as i32), json!(naive_date(d)), json!(d))).boxed()
        }
        Ty::TimeMillis => (0..86_400_000i32)
            .prop_map(|v| {
                (Avro::TimeMillis(v), json!(naive_time(v.into(), 1000, 3)), json!(naive_time(v.into(), 1000, 3)))
            })
            .boxed(),
        Ty::TimeMicros => (0..86_400_000_000i64)
            .prop_map(|v| (Avro::TimeMicros(v), json!(naive_time(v, 1_000_000, 6)), json!(v)))
            .boxed(),
        Ty::TsMillis => (-DAY_RANGE * 86_400_000..DAY_RANGE * 86_400_000)
            .prop_map(|v| {
                let text = naive_timestamp(v, 1000, 3);
                (Avro::TimestampMillis(v), json!(text), json!(text))
            })
            .boxed(),
        Ty::TsMicros => (-DAY_RANGE * 86_400_000_000..DAY_RANGE * 86_400_000_000)
            .prop_map(|v| (Avro::TimestampMicros(v), json!(naive_timestamp(v, 1_000_000, 6)), json!(v)))
            .boxed(),
        Ty::LocalTsMicros => (-DAY_RANGE * 86_400_000_000..DAY_RANGE * 86_400_000_000)
            .prop_map(|v| {
                let text = naive_timestamp(v, 1_000_000, 6);
                (Avro::LocalTimestampMicros(v), json!(text), json!(text.trim_end_matches('Z')))
            })
            .boxed(),
        Ty::Decimal { precision, scale } => (-bounded(precision)..=bounded(precision))
            .prop_map(move |v| {
                let text = decimal_text(v, scale);
                (Avro::Decimal(Decimal::from(minimal_be(v))), json!(text), json!(text))
            })
            .boxed(),
        Ty::FixedDecimal { precision, scale } => (-bounded(precision)..=bounded(precision))
            .prop_map(move |v| {
                let text = decimal_text(v, scale);
                (Avro::Decimal(Decimal::from(v.to_be_bytes().to_vec())), json!(text), json!(text))
            })
            .boxed(),
        Ty::Enum { symbols, .. } => (0..symbols)
            .prop_map(|i| {
                let s = format!("S{i}");
                (Avro::Enum(i as u32, s.clone()), json!(s), json!(s))
            })
            .boxed(),
        Ty::Fixed { size, .. } => prop::collection::vec(any::<u8>(), size)
            .prop_map(move |b| (Avro::Fixed(size, b.clone()), latin1(&b), latin1(&b)))
            .boxed(),
        Ty::Array(item) => prop::collection::vec(value(&item), 0..4)
            .prop_map(|items| {
                let (a, (d, e)): (Vec<Avro>, (Vec<Json>, Vec<Json>)) =
                    items.into_iter().map(|(a, d, e)| (a, (d, e))).unzip();
                (Avro::Array(a), Json::Array(d), Json::Array(e))
            })
            .boxed(),
        Ty::Map(item) => prop::collection::btree_map("[a-z\u{e9}]{0,3}", value(&item), 0..4)
            .prop_map(|m: BTreeMap<String, Gen>| {
                let mut a = HashMap::new();
                let (mut d, mut e) = (serde_json::Map::new(), serde_json::Map::new());
                for (k, (av, dv, ev)) in m {
                    a.insert(k.clone(), av);
                    d.insert(k.clone(), dv);
                    e.insert(k, ev);
                }
                (Avro::Map(a), Json::Object(d), Json::Object(e))
            })
            .boxed(),
        Ty::Record { fields, .. } => fields
            .iter()
            .map(value)
            .collect::<Vec<_>>()
            .prop_map(|vals| {
                let mut a = Vec::new();
                let (mut d, mut e) = (serde_json::Map::new(), serde_json::Map::new());
                for (i, (av, dv, ev)) in vals.into_iter().enumerate() {
                    a.push((format!("f{i}"), av));
                    d.insert(format!("f{i}"), dv);
                    e.insert(format!("f{i}"), ev);
                }
                (Avro::Record(a), Json::Object(d), Json::Object(e))
            })
            .boxed(),
        Ty::Union(branches) => {
            let options: Vec<BoxedStrategy<Gen>> = branches
                .iter()
                .enumerate()
                .map(|(i, b)| {
                    let name = tag(b);
                    (value(b), any::<bool>())
                        .prop_map(move |((a, d, e), tagged)| {
                            let e = if tagged { json!({ name.clone(): e }) } else { e };
                            (Avro::Union(i as u32, Box::new(a)), d, e)
                        })
                        .boxed()
                })
                .collect();
            prop::strategy::Union::new(options).boxed()
        }
    }
}

fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

const F32: &str = "$f32";

/// JSON equality, except that `{"$f32": x}` in `expected` matches any number that is `x` as an f32.
fn json_matches(got: &Json, expected: &Json) -> bool {
    match (got, expected) {
        (Json::Number(g), Json::Object(e)) if e.len() == 1 && e.contains_key(F32) => {
            g.as_f64().map(|g| g as f32) == e[F32].as_f64().map(|e| e as f32)
        }
        (Json::Array(g), Json::Array(e)) => g.len() == e.len() && g.iter().zip(e).all(|(g, e)| json_matches(g, e)),
        (Json::Object(g), Json::Object(e)) => {
            g.len() == e.len() && g.iter().all(|(k, g)| e.get(k).is_some_and(|e| json_matches(g, e)))
        }
        _ => got == expected,
    }
}

fn case() -> impl Strategy<Value = (String, Gen)> {
    ty().prop_flat_map(|mut t| {
        assign_names(&mut t, &mut 0);
        let schema = schema_json(&t).to_string();
        (Just(schema), value(&t))
    })
}

proptest! {
    // PROPTEST_CASES raises the count for a longer run.
    #![proptest_config(ProptestConfig { cases: cases(600), ..ProptestConfig::default() })]

    #[test]
    fn decoder_reads_what_apache_avro_writes((schema_text, (avro, expected, _)) in case()) {
        let schema = Schema::parse_str(&schema_text).unwrap();
        let bytes = apache_avro::to_avro_datum(&schema, avro).unwrap();
        let mut out = Vec::new();
        Decoder::new(&schema, &schema).unwrap().decode_to_json(&bytes, &mut out).unwrap();
        let got: Json = serde_json::from_slice(&out).unwrap();
        prop_assert!(json_matches(&got, &expected), "got {} expected {} for schema {}", got, expected, schema_text);
    }

    #[test]
    fn apache_avro_reads_what_encoder_writes((schema_text, (avro, _, input)) in case()) {
        let schema = Schema::parse_str(&schema_text).unwrap();
        let mut bytes = Vec::new();
        Encoder::new(&schema).unwrap().encode_json(input.to_string().as_bytes(), &mut bytes)
            .map_err(|e| TestCaseError::fail(format!("{e}: {input} for {schema_text}")))?;
        let back = apache_avro::from_avro_datum(&schema, &mut &bytes[..], None).unwrap();
        prop_assert_eq!(back, avro, "schema {}", schema_text);
    }
}

/// apache-avro's value as natural JSON (floats marked for f32 comparison).
fn avro_to_json(v: &Avro) -> Json {
    match v {
        Avro::Null => Json::Null,
        Avro::Boolean(b) => json!(b),
        Avro::Int(i) => json!(i),
        Avro::Long(i) => json!(i),
        Avro::Float(f) => json!({ F32: f }),
        Avro::Double(f) => json!(f),
        Avro::String(s) | Avro::Enum(_, s) => json!(s),
        Avro::Bytes(b) | Avro::Fixed(_, b) => latin1(b),
        Avro::Union(_, v) => avro_to_json(v),
        Avro::Array(items) => Json::Array(items.iter().map(avro_to_json).collect()),
        Avro::Map(m) => Json::Object(m.iter().map(|(k, v)| (k.clone(), avro_to_json(v))).collect()),
        Avro::Record(fields) => Json::Object(fields.iter().map(|(k, v)| (k.clone(), avro_to_json(v))).collect()),
        other => panic!("not used in the resolution oracle: {other:?}"),
    }
}

/// The member names of a JSON object, in the order of the text.
struct KeysInOrder(Vec<String>);

impl<'de> serde::Deserialize<'de> for KeysInOrder {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = KeysInOrder;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<KeysInOrder, A::Error> {
                let mut keys = Vec::new();
                while let Some((k, serde::de::IgnoredAny)) = map.next_entry::<String, serde::de::IgnoredAny>()? {
                    keys.push(k);
                }
                Ok(KeysInOrder(keys))
            }
        }
        d.deserialize_map(V)
    }
}

fn writer_ty() -> Ty {
    let mut t = Ty::Record {
        name: String::new(),
        fields: vec![
            Ty::Int,
            Ty::Union(vec![Ty::Null, Ty::Str]),
            Ty::Record {
                name: String::new(),
                fields: vec![Ty::Float, Ty::Array(Box::new(Ty::Map(Box::new(Ty::Long))))],
            },
            Ty::Enum { name: String::new(), symbols: 3 },
            Ty::Array(Box::new(Ty::Record { name: String::new(), fields: vec![Ty::Bytes, Ty::Int] })),
            Ty::Fixed { name: String::new(), size: 4 },
            Ty::Map(Box::new(Ty::Union(vec![Ty::Null, Ty::Int, Ty::Str]))),
            Ty::Double,
        ],
    };
    assign_names(&mut t, &mut 0);
    t
}

/// The writer schema evolved: promotions, a removed field (with nested types to skip), added fields with
/// defaults (top level and nested), reordered unions, and fields in another order.
fn reader_schema(writer: &Json) -> Json {
    let mut r = writer.clone();
    let fields = r["fields"].as_array_mut().unwrap();
    fields[0]["type"] = json!("long");
    fields[1]["type"] = json!(["string", "null"]);
    fields[2]["type"]["fields"][0]["type"] = json!("double");
    fields[4]["type"]["items"]["fields"].as_array_mut().unwrap().push(json!({"name":"n","type":"int","default":7}));
    fields[6]["type"]["values"] = json!(["string", "long", "null"]);
    fields.remove(5);
    fields.insert(1, json!({"name":"added","type":{"type":"array","items":"string"},"default":["x"]}));
    fields.swap(2, 3);
    r
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(300), ..ProptestConfig::default() })]

    #[test]
    fn resolution_agrees_with_apache_avro((avro, _, _) in value(&writer_ty())) {
        let writer_json = schema_json(&writer_ty());
        let writer = Schema::parse_str(&writer_json.to_string()).unwrap();
        let reader = Schema::parse_str(&reader_schema(&writer_json).to_string()).unwrap();
        let bytes = apache_avro::to_avro_datum(&writer, avro).unwrap();
        let resolved = apache_avro::from_avro_datum(&writer, &mut &bytes[..], Some(&reader)).unwrap();
        let mut out = Vec::new();
        Decoder::new(&writer, &reader).unwrap().decode_to_json(&bytes, &mut out).unwrap();
        let got: Json = serde_json::from_slice(&out).unwrap();
        let expected = avro_to_json(&resolved);
        prop_assert!(json_matches(&got, &expected), "got {} expected {}", got, expected);
        // Members come in reader order.
        let keys: KeysInOrder = serde_json::from_slice(&out).unwrap();
        prop_assert_eq!(keys.0, ["f0", "added", "f2", "f1", "f3", "f4", "f6", "f7"]);
    }
}
