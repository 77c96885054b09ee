//! Schema resolution (writer schema != reader schema) and decode errors.

mod common;

use common::*;
use serde_json::json;
use sluice_avro::{CodecError, Decoder};

const V1: &str = r#"{"type":"record","name":"Ev","namespace":"com.acme","fields":[
    {"name":"id","type":"int"},
    {"name":"name","type":"string"},
    {"name":"gone","type":{"type":"record","name":"Gone","fields":[
        {"name":"tags","type":{"type":"map","values":{"type":"array","items":["null","string",{"type":"fixed","name":"F3","size":3}]}}},
        {"name":"blob","type":"bytes"},{"name":"d","type":"double"},{"name":"f","type":"float"},{"name":"b","type":"boolean"},
        {"name":"e","type":{"type":"enum","name":"GE","symbols":["X","Y"]}},{"name":"n","type":"null"}]}},
    {"name":"score","type":"float"},
    {"name":"payload","type":"string"},
    {"name":"color","type":{"type":"enum","name":"Color","symbols":["RED","GREEN","PURPLE"]}}
]}"#;

const V3: &str = r#"{"type":"record","name":"Event","namespace":"com.acme","aliases":["Ev"],"fields":[
    {"name":"id","type":"long"},
    {"name":"added","type":"string","default":"n/a"},
    {"name":"full_name","type":"string","aliases":["name"]},
    {"name":"score","type":"double"},
    {"name":"payload","type":"bytes"},
    {"name":"color","type":{"type":"enum","name":"Color","symbols":["RED","GREEN","OTHER"],"default":"OTHER"}},
    {"name":"opt","type":["null","int"],"default":null}
]}"#;

fn v1_event() -> serde_json::Value {
    json!({"id": 7, "name": "n", "gone": {"tags": {"a": [null, "s", "abc"], "b": []}, "blob": "\u{1}\u{ff}", "d": 1.5,
        "f": 2.5, "b": true, "e": "Y", "n": null}, "score": 0.1, "payload": "p\u{e9}", "color": "PURPLE"})
}

#[test]
fn added_removed_renamed_promoted() {
    let (w, r) = (schema(V1), schema(V3));
    let avro = encode(&w, &v1_event().to_string());
    let got = decode_text(&w, &r, &avro);
    // float 0.1 promoted to double is the float's exact value; string "pé" read as bytes is its UTF-8.
    assert_eq!(
        got,
        r#"{"id":7,"added":"n/a","full_name":"n","score":0.10000000149011612,"payload":"pÃ©","color":"OTHER","opt":null}"#
    );
}

#[test]
fn writer_fields_after_skipped_ones_are_read_correctly() {
    // The skipped record holds every kind of value; later fields must still line up.
    let (w, r) = (schema(V1), schema(V3));
    for color in ["RED", "GREEN"] {
        let mut ev = v1_event();
        ev["color"] = json!(color);
        ev["gone"]["tags"] = json!({"k1": ["xyz", null], "k2": [null]});
        let got = decode(&w, &r, &encode(&w, &ev.to_string()));
        assert_eq!(got["color"], json!(color));
        assert_eq!(got["full_name"], json!("n"));
    }
}

#[test]
fn skipping_blocks_with_byte_sizes() {
    // Arrays written with negative block counts carry their size in bytes, which skipping uses.
    let w = schema(
        r#"{"type":"record","name":"R","fields":[{"name":"a","type":{"type":"array","items":"long"}},{"name":"b","type":"int"}]}"#,
    );
    let r = schema(r#"{"type":"record","name":"R","fields":[{"name":"b","type":"int"}]}"#);
    // a = [1, 2] as one block of -2 items and 2 bytes, then b = 5.
    let avro = [3, 4, 2, 4, 0, 10];
    assert_eq!(decode_text(&w, &r, &avro), r#"{"b":5}"#);
    assert_eq!(decode_text(&w, &w, &avro), r#"{"a":[1,2],"b":5}"#);
}

#[test]
fn numeric_and_string_promotions() {
    let cases = [
        (r#""int""#, r#""long""#, "5", "5"),
        (r#""int""#, r#""float""#, "5", "5.0"),
        (r#""int""#, r#""double""#, "-5", "-5.0"),
        (r#""long""#, r#""float""#, "16777217", "16777216.0"),
        (r#""long""#, r#""double""#, "9007199254740993", "9007199254740992.0"),
        (r#""float""#, r#""double""#, "1.5", "1.5"),
        (r#""string""#, r#""bytes""#, r#""é""#, r#""Ã©""#),
        (r#""bytes""#, r#""string""#, r#""abc""#, r#""abc""#),
        (r#"{"type":"int","logicalType":"date"}"#, r#""int""#, r#""1970-01-03""#, "2"),
        (r#""long""#, r#"{"type":"long","logicalType":"timestamp-millis"}"#, "1000", r#""1970-01-01T00:00:01.000Z""#),
        (r#""int""#, r#"{"type":"long","logicalType":"timestamp-micros"}"#, "1", r#""1970-01-01T00:00:00.000001Z""#),
        (
            r#""bytes""#,
            r#"{"type":"bytes","logicalType":"decimal","precision":4,"scale":2}"#,
            r#""\u0004\u00d2""#,
            r#""12.34""#,
        ),
        (r#""string""#, r#"{"type":"string","logicalType":"uuid"}"#, r#""x""#, r#""x""#),
    ];
    for (w, r, value, expected) in cases {
        let (ws, rs) = (schema(w), schema(r));
        assert_eq!(decode_text(&ws, &rs, &encode(&ws, value)), expected, "{w} -> {r}");
    }
    let bad_utf8 = schema(r#""bytes""#);
    assert_eq!(
        decode_err(&bad_utf8, &schema(r#""string""#), &encode(&bad_utf8, r#""\u00ff""#)),
        "invalid utf-8 in string"
    );
}

#[test]
fn incompatible_pairs_fail_at_construction() {
    let err = |w: &str, r: &str| Decoder::new(&schema(w), &schema(r)).err().map(|e| e.to_string());
    assert_eq!(
        err(r#""long""#, r#""int""#).as_deref(),
        Some("cannot read writer schema as reader schema at the top level: writer long cannot be read as reader int")
    );
    assert_eq!(
        err(
            r#"{"type":"record","name":"R","fields":[{"name":"a","type":"int"}]}"#,
            r#"{"type":"record","name":"R","fields":[{"name":"a","type":"int"},{"name":"b","type":"int"}]}"#
        )
        .as_deref(),
        Some("reader field `b` is not in the writer schema and has no default")
    );
    assert_eq!(
        err(
            r#"{"type":"record","name":"R","fields":[{"name":"in","type":{"type":"record","name":"I","fields":[{"name":"s","type":"string"}]}}]}"#,
            r#"{"type":"record","name":"R","fields":[{"name":"in","type":{"type":"record","name":"I","fields":[{"name":"s","type":"int"}]}}]}"#
        )
        .as_deref(),
        Some("cannot read writer schema as reader schema at `in.s`: writer string cannot be read as reader int")
    );
    assert!(
        err(r#"{"type":"record","name":"A","fields":[]}"#, r#"{"type":"record","name":"B","fields":[]}"#).is_some()
    );
    assert!(err(r#"{"type":"fixed","name":"F","size":2}"#, r#"{"type":"fixed","name":"F","size":3}"#).is_some());
    assert!(err(r#"{"type":"fixed","name":"F","size":2}"#, r#"{"type":"fixed","name":"G","size":2}"#).is_some());
    assert!(
        err(r#"{"type":"enum","name":"E","symbols":["A"]}"#, r#"{"type":"enum","name":"X","symbols":["A"]}"#).is_some()
    );
    assert!(err(r#"["int","string"]"#, r#""boolean""#).is_some());
    assert!(err(r#""string""#, r#"["null","int"]"#).is_some());
    assert!(matches!(
        Decoder::new(
            &schema(r#"{"type":"bytes","logicalType":"decimal","precision":4,"scale":2}"#),
            &schema(r#"{"type":"bytes","logicalType":"decimal","precision":4,"scale":3}"#)
        ),
        Err(CodecError::Incompatible { .. })
    ));
}

#[test]
fn named_types_match_by_alias_and_unqualified_name() {
    let w = schema(
        r#"{"type":"record","name":"Old","namespace":"a","fields":[{"name":"x","type":{"type":"fixed","name":"H","size":2}}]}"#,
    );
    let r = schema(
        r#"{"type":"record","name":"New","namespace":"b","aliases":["a.Old"],"fields":[
            {"name":"x","type":{"type":"fixed","name":"H2","aliases":["a.H"],"size":2}}]}"#,
    );
    assert_eq!(decode_text(&w, &r, &encode(&w, r#"{"x":"hi"}"#)), r#"{"x":"hi"}"#);
    // Unqualified alias: relative to the reader's namespace.
    let r = schema(
        r#"{"type":"record","name":"New","namespace":"a","aliases":["Old"],"fields":[{"name":"x","type":{"type":"fixed","name":"H","size":2}}]}"#,
    );
    assert_eq!(decode_text(&w, &r, &encode(&w, r#"{"x":"hi"}"#)), r#"{"x":"hi"}"#);
    // Same unqualified name in another namespace (the specification's rule).
    let r = schema(
        r#"{"type":"record","name":"Old","namespace":"z","fields":[{"name":"x","type":{"type":"fixed","name":"H","size":2}}]}"#,
    );
    assert_eq!(decode_text(&w, &r, &encode(&w, r#"{"x":"hi"}"#)), r#"{"x":"hi"}"#);
}

#[test]
fn enums_with_and_without_reader_default() {
    let w = schema(r#"{"type":"enum","name":"E","symbols":["A","B","C"]}"#);
    let with_default = schema(r#"{"type":"enum","name":"E","symbols":["C","A","Z"],"default":"Z"}"#);
    let without = schema(r#"{"type":"enum","name":"E","symbols":["C","A"]}"#);
    assert_eq!(decode_text(&w, &with_default, &encode(&w, r#""A""#)), r#""A""#);
    assert_eq!(decode_text(&w, &with_default, &encode(&w, r#""B""#)), r#""Z""#);
    assert_eq!(decode_text(&w, &without, &encode(&w, r#""C""#)), r#""C""#);
    assert_eq!(
        decode_err(&w, &without, &encode(&w, r#""B""#)),
        "enum symbol `B` is unknown to the reader schema, which has no default"
    );
}

#[test]
fn unions_on_either_side() {
    // Writer union -> reader union in another order, with a promotion.
    let w = schema(r#"["null","int","string"]"#);
    let r = schema(r#"["string","long","null"]"#);
    for (value, expected) in [("null", "null"), ("5", "5"), (r#""s""#, r#""s""#)] {
        assert_eq!(decode_text(&w, &r, &encode(&w, value)), expected);
    }
    // Writer union -> reader non-union: fine until a value uses a branch the reader cannot take.
    let r = schema(r#""long""#);
    assert_eq!(decode_text(&w, &r, &encode(&w, "5")), "5");
    assert_eq!(
        decode_err(&w, &r, &encode(&w, r#""s""#)),
        "writer union branch `string` has no match in the reader schema"
    );
    // Writer non-union -> reader union: the first exact match wins over an earlier promotion.
    let w = schema(r#""int""#);
    let r = schema(r#"["null","double","int"]"#);
    assert_eq!(decode_text(&w, &r, &encode(&w, "3")), "3");
    let r = schema(r#"["null","double"]"#);
    assert_eq!(decode_text(&w, &r, &encode(&w, "3")), "3.0");
    // Records inside unions resolve by name.
    let w = schema(r#"["null",{"type":"record","name":"A","fields":[{"name":"x","type":"int"}]}]"#);
    let r = schema(
        r#"[{"type":"record","name":"B","fields":[{"name":"y","type":"int","default":0}]},
            {"type":"record","name":"A","fields":[{"name":"x","type":"long"},{"name":"y","type":"int","default":1}]},"null"]"#,
    );
    assert_eq!(decode_text(&w, &r, &encode(&w, r#"{"x":4}"#)), r#"{"x":4,"y":1}"#);
    assert_eq!(decode_text(&w, &r, &encode(&w, "null")), "null");
}

#[test]
fn nested_records_arrays_and_maps_resolve_item_types() {
    let w = schema(
        r#"{"type":"record","name":"R","fields":[
            {"name":"items","type":{"type":"array","items":{"type":"record","name":"I","fields":[{"name":"v","type":"int"},{"name":"drop","type":"string"}]}}},
            {"name":"m","type":{"type":"map","values":"float"}}]}"#,
    );
    let r = schema(
        r#"{"type":"record","name":"R","fields":[
            {"name":"m","type":{"type":"map","values":"double"}},
            {"name":"items","type":{"type":"array","items":{"type":"record","name":"I","fields":[{"name":"v","type":"long"},{"name":"new","type":["null","string"],"default":null}]}}}]}"#,
    );
    let avro = encode(&w, r#"{"items":[{"v":1,"drop":"x"},{"v":2,"drop":"y"}],"m":{"k":0.5}}"#);
    // Reader field order differs from the writer's: the output follows the reader.
    assert_eq!(decode_text(&w, &r, &avro), r#"{"m":{"k":0.5},"items":[{"v":1,"new":null},{"v":2,"new":null}]}"#);
}

#[test]
fn reader_defaults_of_every_kind_render_like_values() {
    let w = schema(r#"{"type":"record","name":"R","fields":[{"name":"a","type":"int"}]}"#);
    let r = schema(
        r#"{"type":"record","name":"R","fields":[
            {"name":"d0","type":{"type":"int","logicalType":"date"},"default":19782},
            {"name":"a","type":"int"},
            {"name":"d1","type":{"type":"record","name":"S","fields":[{"name":"x","type":"int","default":1},{"name":"y","type":{"type":"array","items":"string"}}]},"default":{"y":["q"]}},
            {"name":"d2","type":"bytes","default":"\u00ff"},
            {"name":"d3","type":["null","string"],"default":null},
            {"name":"d4","type":{"type":"map","values":"double"},"default":{"k":1}},
            {"name":"d5","type":{"type":"fixed","name":"F","size":2},"default":"ab"}
        ]}"#,
    );
    assert_eq!(
        decode_text(&w, &r, &encode(&w, r#"{"a":5}"#)),
        r#"{"d0":"2024-02-29","a":5,"d1":{"x":1,"y":["q"]},"d2":"ÿ","d3":null,"d4":{"k":1.0},"d5":"ab"}"#
    );
}

#[test]
fn recursive_types_resolve() {
    let w = schema(
        r#"{"type":"record","name":"List","fields":[{"name":"v","type":"int"},{"name":"next","type":["null","List"]}]}"#,
    );
    let r = schema(
        r#"{"type":"record","name":"List","fields":[{"name":"next","type":["null","List"]},{"name":"v","type":"long"},{"name":"w","type":"int","default":0}]}"#,
    );
    let avro = encode(&w, r#"{"v":1,"next":{"v":2,"next":{"v":3,"next":null}}}"#);
    assert_eq!(decode_text(&w, &r, &avro), r#"{"next":{"next":{"next":null,"v":3,"w":0},"v":2,"w":0},"v":1,"w":0}"#);
}

#[test]
fn decode_errors_never_panic_and_name_the_field() {
    let s = schema(include_str!("../benches/http_request.avsc"));
    let avro = encode(
        &s,
        r#"{"service":"checkout","endpoint":"/cart","method":"GET","status":200,"latency_ms":35,"user_id":"u","region":"r",
            "host":"h","user_agent":"a","bytes_out":1,"trace_id":"t","message":"m"}"#,
    );
    // "checkout" takes bytes 0..9, "/cart" 9..15, the method enum index is byte 15.
    assert_eq!(decode_err(&s, &s, &avro[..10]), "field `endpoint`: unexpected end of data");
    assert_eq!(decode_err(&s, &s, &[]), "field `service`: unexpected end of data");
    let mut trailing = avro.clone();
    trailing.extend_from_slice(&[1, 2]);
    assert_eq!(decode_err(&s, &s, &trailing), "2 trailing bytes after the value");
    let mut bad_enum = avro.clone();
    bad_enum[15] = 0x7f;
    assert_eq!(decode_err(&s, &s, &bad_enum), "field `method`: enum index -64 out of range for 7 symbols");

    let e = schema(
        r#"{"type":"record","name":"R","fields":[{"name":"m","type":{"type":"enum","name":"E","symbols":["A"]}}]}"#,
    );
    assert_eq!(decode_err(&e, &e, &[4]), "field `m`: enum index 2 out of range for 1 symbols");
    let u = schema(r#"{"type":"record","name":"R","fields":[{"name":"u","type":["null","int"]}]}"#);
    assert_eq!(decode_err(&u, &u, &[4]), "field `u`: union branch index 2 out of range for 2 branches");
    assert_eq!(decode_err(&u, &u, &[1]), "field `u`: union branch index -1 out of range for 2 branches");
    let l = schema(r#""long""#);
    assert_eq!(decode_err(&l, &l, &[0xff; 11]), "bad varint");
    assert_eq!(decode_err(&l, &l, &[0x80, 0x80]), "unexpected end of data");
    let i = schema(r#""int""#);
    assert_eq!(decode_err(&i, &i, &[0x80, 0x80, 0x80, 0x80, 0x10]), "bad varint");
    let st = schema(r#""string""#);
    assert_eq!(decode_err(&st, &st, &[3]), "negative length -2");
    assert_eq!(decode_err(&st, &st, &[4, 0xff, 0xfe]), "invalid utf-8 in string");
    assert_eq!(decode_err(&st, &st, &[20, b'a']), "unexpected end of data");
    let a = schema(r#"{"type":"array","items":"long"}"#);
    assert_eq!(
        decode_err(&a, &a, &[0xfe, 0xff, 0xff, 0xff, 0x0f]),
        "block of 2147483647 items is larger than the data allows"
    );
    assert_eq!(decode_err(&a, &a, &[6, 2, 2]), "block of 3 items is larger than the data allows");
    let strs = schema(r#"{"type":"array","items":"string"}"#);
    assert_eq!(decode_err(&strs, &strs, &[6, 2, b'a', 2, b'b', 4, b'c']), "field `[2]`: unexpected end of data");
    let nulls = schema(r#"{"type":"array","items":"null"}"#);
    assert_eq!(decode_text(&nulls, &nulls, &[6, 0]), "[null,null,null]");
    assert!(decode_err(&nulls, &nulls, &[0xfe, 0xff, 0xff, 0xff, 0x0f, 0]).starts_with("block of 2147483647 items"));
    let b = schema(r#""boolean""#);
    assert_eq!(decode_err(&b, &b, &[2]), "invalid boolean byte 0x02");
    let t = schema(r#"{"type":"int","logicalType":"time-millis"}"#);
    assert_eq!(decode_err(&t, &t, &[1]), "time -1 is not within one day");
}

#[test]
fn deeply_nested_data_is_refused_not_overflowing_the_stack() {
    let s = schema(r#"{"type":"record","name":"N","fields":[{"name":"next","type":["null","N"]}]}"#);
    // 100,000 levels: union branch 1 each, then null.
    let mut avro = vec![2u8; 100_000];
    avro.push(0);
    let err = decode_err(&s, &s, &avro);
    assert!(err.ends_with("values nested deeper than 128 levels"), "{err}");
    let mut ok = vec![2u8; 100];
    ok.push(0);
    assert!(decode_text(&s, &s, &ok).starts_with(r#"{"next":{"next":"#));
}

#[test]
fn wire_format_frames_decodable_bodies() {
    let s = schema(r#"{"type":"record","name":"R","fields":[{"name":"a","type":"string"}]}"#);
    let mut framed = Vec::new();
    sluice_avro::wire::frame(42, &encode(&s, r#"{"a":"x"}"#), &mut framed);
    assert_eq!(framed[..5], [sluice_avro::wire::MAGIC, 0, 0, 0, 42]);
    let (id, body) = sluice_avro::wire::parse(&framed).unwrap();
    assert_eq!(id, 42);
    assert_eq!(decode_text(&s, &s, body), r#"{"a":"x"}"#);
    assert_eq!(
        sluice_avro::wire::parse(&[1, 0, 0, 0, 42]).unwrap_err().to_string(),
        "bad magic byte 0x01, expected 0x00"
    );
    assert_eq!(sluice_avro::wire::parse(&[]).unwrap_err().to_string(), "empty message");
}

#[test]
fn json_output_is_bounded_whatever_the_defaults() {
    // Written: an array of empty records (each item takes no bytes). Read: each item gains a 10 KB default,
    // so 1,000,000 items in a 5-byte body would be 10 GB of JSON.
    let writer =
        sluice_avro::Schema::parse_str(r#"{"type":"array","items":{"type":"record","name":"E","fields":[]}}"#).unwrap();
    let big = "x".repeat(10_000);
    let reader = sluice_avro::Schema::parse_str(&format!(
        r#"{{"type":"array","items":{{"type":"record","name":"E","fields":[{{"name":"f","type":"string","default":"{big}"}}]}}}}"#
    ))
    .unwrap();
    let d = sluice_avro::Decoder::new(&writer, &reader).unwrap();
    let mut body = Vec::new();
    // Block of 1,000,000 items (zigzag varint), then the end-of-array block.
    let mut n: u64 = 2_000_000;
    while n >= 0x80 {
        body.push((n as u8) | 0x80);
        n >>= 7;
    }
    body.push(n as u8);
    body.push(0);
    let mut out = b"prefix".to_vec();
    let err = d.decode_to_json(&body, &mut out).unwrap_err();
    assert!(err.to_string().contains("would exceed"), "{err}");
    assert_eq!(out, b"prefix", "nothing is left behind");
    // A small legitimate expansion stays within the default bound.
    let mut one = vec![2, 0];
    one.extend_from_slice(&[]);
    let mut out = Vec::new();
    d.decode_to_json(&one, &mut out).unwrap();
    assert!(out.len() > 10_000);
    // An explicit smaller cap is honoured.
    let mut out = Vec::new();
    assert!(d.decode_to_json_capped(&one, &mut out, 100).is_err());
}
