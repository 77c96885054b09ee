//! Round trips for every type and logical type, unions, defaults, named types, and error messages.

mod common;

use common::*;
use sluice_avro::{Encoder, Schema};

fn prim(t: &str) -> Schema {
    schema(&format!(r#"{{"type":"{t}"}}"#))
}

#[test]
fn primitives_round_trip() {
    let cases: &[(&str, &[&str])] = &[
        ("null", &["null"]),
        ("boolean", &["true", "false"]),
        ("int", &["0", "-1", "2147483647", "-2147483648"]),
        ("long", &["0", "9223372036854775807", "-9223372036854775808", "35"]),
        ("float", &["1.5", "-0.25", "3.4028235e38", "\"NaN\"", "\"-Infinity\""]),
        ("double", &["1.5", "1e300", "-2.5e-300", "\"Infinity\""]),
        ("string", &[r#""""#, r#""héllo \"quoted\" \\ \n\u0001 😀""#]),
        ("bytes", &[r#""""#, r#""\u0000\u00ff abc\u0080""#]),
    ];
    for (t, values) in cases {
        let s = prim(t);
        for v in *values {
            assert_round_trip(&s, v, v);
        }
    }
}

#[test]
fn decoded_text_is_canonical_serde_json() {
    let s = prim("string");
    let text = "tab\t quote\" nul\u{0} del\u{7f} é 😀";
    let json = serde_json::to_string(text).unwrap();
    assert_eq!(round_trip(&s, &json), json);
    assert_eq!(round_trip(&prim("double"), "35"), "35.0");
    assert_eq!(round_trip(&prim("float"), "0.1"), "0.1");
    assert_eq!(round_trip(&prim("long"), "35.0"), "35");
    assert_eq!(round_trip(&prim("bytes"), r#""\u00ff\u0001""#), r#""ÿ\u0001""#);
}

#[test]
fn primitive_encodings_match_the_spec() {
    assert_eq!(encode(&prim("int"), "-64"), [0x7f]);
    assert_eq!(encode(&prim("long"), "64"), [0x80, 0x01]);
    assert_eq!(encode(&prim("string"), r#""foo""#), [6, b'f', b'o', b'o']);
    assert_eq!(encode(&prim("boolean"), "true"), [1]);
    assert_eq!(encode(&prim("null"), "null"), Vec::<u8>::new());
    assert_eq!(encode(&prim("float"), "1"), 1f32.to_le_bytes());
    let s = schema(r#"{"type":"array","items":"long"}"#);
    assert_eq!(encode(&s, "[3, 27]"), [4, 6, 54, 0]);
    assert_eq!(encode(&s, "[]"), [0]);
    let s = schema(r#"["null","string"]"#);
    assert_eq!(encode(&s, "null"), [0]);
    assert_eq!(encode(&s, r#""a""#), [2, 2, b'a']);
}

#[test]
fn complex_types_round_trip() {
    let s = schema(
        r#"{"type":"record","name":"All","namespace":"com.acme","fields":[
            {"name":"e","type":{"type":"enum","name":"Color","symbols":["RED","GREEN","BLUE"]}},
            {"name":"a","type":{"type":"array","items":{"type":"map","values":"int"}}},
            {"name":"m","type":{"type":"map","values":{"type":"array","items":"string"}}},
            {"name":"f","type":{"type":"fixed","name":"Four","size":4}},
            {"name":"n","type":{"type":"record","name":"Inner","fields":[{"name":"x","type":"double"}]}},
            {"name":"again","type":"Inner"},
            {"name":"u","type":["null","Color","Four","Inner"]}
        ]}"#,
    );
    let json = r#"{"e":"GREEN","a":[{"k":1,"j":-2},{}],"m":{"x":["p","q"],"y":[]},"f":"\u0000\u0001\u00fe\u00ff",
        "n":{"x":1.25},"again":{"x":-0.5},"u":{"x":2.0}}"#;
    assert_round_trip(&s, json, json);
    for u in ["null", r#""BLUE""#, r#""abcd""#] {
        let json = format!(r#"{{"e":"RED","a":[],"m":{{}},"f":"abcd","n":{{"x":0.0}},"again":{{"x":0.0}},"u":{u}}}"#);
        assert_round_trip(&s, &json, &json);
    }
}

#[test]
fn logical_types_round_trip() {
    let s = schema(
        r#"{"type":"record","name":"L","fields":[
            {"name":"date","type":{"type":"int","logicalType":"date"}},
            {"name":"tm","type":{"type":"int","logicalType":"time-millis"}},
            {"name":"tu","type":{"type":"long","logicalType":"time-micros"}},
            {"name":"tsm","type":{"type":"long","logicalType":"timestamp-millis"}},
            {"name":"tsu","type":{"type":"long","logicalType":"timestamp-micros"}},
            {"name":"tsn","type":{"type":"long","logicalType":"timestamp-nanos"}},
            {"name":"ltm","type":{"type":"long","logicalType":"local-timestamp-millis"}},
            {"name":"ltu","type":{"type":"long","logicalType":"local-timestamp-micros"}},
            {"name":"dec","type":{"type":"bytes","logicalType":"decimal","precision":6,"scale":2}},
            {"name":"decf","type":{"type":"fixed","name":"D8","size":8,"logicalType":"decimal","precision":18,"scale":3}},
            {"name":"big","type":{"type":"bytes","logicalType":"big-decimal"}},
            {"name":"id","type":{"type":"string","logicalType":"uuid"}},
            {"name":"dur","type":{"type":"fixed","name":"Dur","size":12,"logicalType":"duration"}}
        ]}"#,
    );
    let json = r#"{"date":"2024-02-29","tm":"23:59:59.999","tu":"00:00:00.000001",
        "tsm":"2024-05-01T10:00:00.500Z","tsu":"1969-12-31T23:59:59.999999Z","tsn":"2024-05-01T10:00:00.123456789Z",
        "ltm":"2024-05-01T10:00:00.000Z","ltu":"2024-05-01T10:00:00.000001Z",
        "dec":"-1234.56","decf":"123456789012345.678","big":"-3.14159","id":"550e8400-e29b-41d4-a716-446655440000",
        "dur":{"months":1,"days":2,"millis":3}}"#;
    assert_round_trip(&s, json, json);

    // Alternative inputs the encoder accepts, and the canonical text they come back as.
    let alt = r#"{"date":19782,"tm":86399999,"tu":1,"tsm":"2024-05-01T12:00:00.5+02:00","tsu":-1,"tsn":1714557600123456789,
        "ltm":"2024-05-01T10:00:00","ltu":1714557600000001,"dec":-1234.56,"decf":1.5e2,"big":"-314159e-5",
        "id":"550e8400-e29b-41d4-a716-446655440000","dur":"\u0001\u0000\u0000\u0000\u0002\u0000\u0000\u0000\u0003\u0000\u0000\u0000"}"#;
    let canonical = json.replace("123456789012345.678", "150.000");
    assert_round_trip(&s, alt, &canonical);
}

#[test]
fn logical_encodings_match_the_spec() {
    let date = schema(r#"{"type":"int","logicalType":"date"}"#);
    assert_eq!(encode(&date, r#""1970-01-02""#), [2]);
    let ts = schema(r#"{"type":"long","logicalType":"timestamp-millis"}"#);
    assert_eq!(encode(&ts, r#""1970-01-01T00:00:00.001Z""#), [2]);
    let dec = schema(r#"{"type":"bytes","logicalType":"decimal","precision":4,"scale":2}"#);
    assert_eq!(encode(&dec, r#""12.34""#), [4, 0x04, 0xd2]);
    assert_eq!(encode(&dec, "-0.05"), [2, 0xfb]);
    let decf = schema(r#"{"type":"fixed","name":"F","size":3,"logicalType":"decimal","precision":4,"scale":2}"#);
    assert_eq!(encode(&decf, r#""-12.34""#), [0xff, 0xfb, 0x2e]);
}

#[test]
fn unions_natural_and_tagged() {
    let s = schema(
        r#"{"type":"record","name":"U","namespace":"com.acme","fields":[
            {"name":"opt","type":["null","long"]},
            {"name":"multi","type":["null","int","string","double",{"type":"record","name":"P","fields":[{"name":"x","type":"int"}]},{"type":"array","items":"int"}]},
            {"name":"two","type":[{"type":"record","name":"A","fields":[{"name":"a","type":"int"}]},{"type":"record","name":"B","fields":[{"name":"b","type":"string"}]}]},
            {"name":"rec","type":["null","P"]}
        ]}"#,
    );
    let cases = [
        (r#"{"opt":5,"multi":5,"two":{"a":1},"rec":{"x":1}}"#, r#"{"opt":5,"multi":5,"two":{"a":1},"rec":{"x":1}}"#),
        (
            r#"{"opt":null,"multi":"s","two":{"b":"x"},"rec":null}"#,
            r#"{"opt":null,"multi":"s","two":{"b":"x"},"rec":null}"#,
        ),
        // An int too large for `int` goes to the first branch it fits: double.
        (
            r#"{"opt":null,"multi":3000000000,"two":{"a":1},"rec":null}"#,
            r#"{"opt":null,"multi":3000000000.0,"two":{"a":1},"rec":null}"#,
        ),
        (
            r#"{"opt":null,"multi":1.5,"two":{"a":1},"rec":null}"#,
            r#"{"opt":null,"multi":1.5,"two":{"a":1},"rec":null}"#,
        ),
        (
            r#"{"opt":null,"multi":{"x":7},"two":{"a":1},"rec":null}"#,
            r#"{"opt":null,"multi":{"x":7},"two":{"a":1},"rec":null}"#,
        ),
        (
            r#"{"opt":null,"multi":[1,2],"two":{"a":1},"rec":null}"#,
            r#"{"opt":null,"multi":[1,2],"two":{"a":1},"rec":null}"#,
        ),
        // Tagged forms: by primitive name, by full and by short name of a named type.
        (
            r#"{"opt":{"long":5},"multi":{"string":"7"},"two":{"com.acme.B":{"b":"y"}},"rec":{"com.acme.P":{"x":2}}}"#,
            r#"{"opt":5,"multi":"7","two":{"b":"y"},"rec":{"x":2}}"#,
        ),
        (
            r#"{"opt":{"null":null},"multi":{"P":{"x":3}},"two":{"A":{"a":4}},"rec":{"P":{"x":5}}}"#,
            r#"{"opt":null,"multi":{"x":3},"two":{"a":4},"rec":{"x":5}}"#,
        ),
        (
            r#"{"opt":null,"multi":{"double":2},"two":{"a":1},"rec":null}"#,
            r#"{"opt":null,"multi":2.0,"two":{"a":1},"rec":null}"#,
        ),
    ];
    for (input, expected) in cases {
        assert_round_trip(&s, input, expected);
    }
    // The tagged form picks the branch even where the natural value would fit an earlier one.
    let s = schema(r#"["null","int","long"]"#);
    assert_eq!(encode(&s, r#"{"long":1}"#), [4, 2]);
    assert_eq!(encode(&s, "1"), [2, 2]);
}

#[test]
fn tagged_union_object_needs_exactly_one_member() {
    let s = schema(r#"["null",{"type":"record","name":"P","fields":[{"name":"x","type":"int"}]}]"#);
    assert!(encode_err(&s, r#"{"P":{"x":1},"x":2}"#).contains("exactly one member"));
    // A record field named like the record is read naturally.
    let s = schema(r#"["null",{"type":"record","name":"P","fields":[{"name":"P","type":"int"}]}]"#);
    assert_eq!(encode(&s, r#"{"P":3}"#), [2, 6]);
}

#[test]
fn missing_fields_take_defaults() {
    let s = schema(
        r#"{"type":"record","name":"D","fields":[
            {"name":"id","type":"long"},
            {"name":"s","type":"string","default":"dflt"},
            {"name":"opt","type":["null","string"],"default":null},
            {"name":"e","type":{"type":"enum","name":"E","symbols":["A","B"]},"default":"B"},
            {"name":"b","type":"bytes","default":"\u00ff"},
            {"name":"arr","type":{"type":"array","items":"int"},"default":[1,2]},
            {"name":"m","type":{"type":"map","values":"boolean"},"default":{"k":true}},
            {"name":"r","type":{"type":"record","name":"R","fields":[{"name":"x","type":"int","default":9},{"name":"y","type":"int"}]},"default":{"y":1}},
            {"name":"ts","type":{"type":"long","logicalType":"timestamp-millis"},"default":1000},
            {"name":"f","type":"float","default":1}
        ]}"#,
    );
    assert_round_trip(
        &s,
        r#"{"id":1}"#,
        r#"{"id":1,"s":"dflt","opt":null,"e":"B","b":"\u00ff","arr":[1,2],"m":{"k":true},"r":{"x":9,"y":1},
            "ts":"1970-01-01T00:00:01.000Z","f":1.0}"#,
    );
    assert_eq!(encode_err(&s, "{}"), "missing field `id` (no default)");
    assert_eq!(encode_err(&s, r#"{"id":1,"r":{"x":1}}"#), "missing field `r.y` (no default)");
}

#[test]
fn fields_in_any_order_encode_like_schema_order() {
    let s = schema(
        r#"{"type":"record","name":"O","fields":[
            {"name":"a","type":"int"},{"name":"b","type":"string","default":"B"},{"name":"c","type":"long"},
            {"name":"d","type":{"type":"record","name":"In","fields":[{"name":"x","type":"int"},{"name":"y","type":"int"}]}}
        ]}"#,
    );
    let in_order = encode(&s, r#"{"a":1,"b":"B","c":3,"d":{"x":1,"y":2}}"#);
    for json in [
        r#"{"c":3,"a":1,"d":{"y":2,"x":1}}"#,
        r#"{"d":{"x":1,"y":2},"c":3,"b":"B","a":1}"#,
        r#"{"a":1,"d":{"y":2,"x":1},"c":3}"#,
        r#"{"b":"B","a":1,"c":3,"d":{"x":1,"y":2}}"#,
    ] {
        assert_eq!(encode(&s, json), in_order, "{json}");
    }
    assert_eq!(encode_err(&s, r#"{"c":3,"a":1,"c":4,"d":{"x":1,"y":2}}"#), "duplicate field `c`");
    assert_eq!(encode_err(&s, r#"{"a":1,"a":1}"#), "duplicate field `a`");
}

#[test]
fn recursive_and_namespaced_types() {
    let s = schema(
        r#"{"type":"record","name":"Node","namespace":"com.acme.tree","fields":[
            {"name":"value","type":"int"},
            {"name":"children","type":{"type":"array","items":"Node"}},
            {"name":"next","type":["null","com.acme.tree.Node"],"default":null},
            {"name":"meta","type":{"type":"record","name":"Meta","namespace":"other","fields":[
                {"name":"kind","type":{"type":"enum","name":"Kind","symbols":["LEAF","INNER"]}}]}},
            {"name":"kind2","type":"other.Kind"}
        ]}"#,
    );
    let json = r#"{"value":1,"children":[{"value":2,"children":[],"next":null,"meta":{"kind":"LEAF"},"kind2":"LEAF"}],
        "next":{"value":3,"children":[],"next":null,"meta":{"kind":"LEAF"},"kind2":"INNER"},"meta":{"kind":"INNER"},"kind2":"INNER"}"#;
    assert_round_trip(&s, json, json);
}

#[test]
fn http_request_event() {
    let s = schema(include_str!("../benches/http_request.avsc"));
    let json = r#"{"service":"checkout","endpoint":"/cart","method":"GET","status":200,"latency_ms":35,"user_id":"user-4711",
        "region":"eu-west-1","host":"checkout-7.prod.internal","user_agent":"curl/8.5.0","bytes_out":12345,
        "trace_id":"0123456789abcdef","message":"request completed normally"}"#;
    assert_round_trip(&s, json, json);
    // Byte for byte what apache-avro writes.
    let value = apache_avro::types::Value::from(serde_json::from_str::<serde_json::Value>(json).unwrap());
    let value = value.resolve(&s).unwrap();
    assert_eq!(encode(&s, json), apache_avro::to_avro_datum(&s, value).unwrap());
}

#[test]
fn encode_errors_name_the_field() {
    let s = schema(
        r#"{"type":"record","name":"Ev","fields":[
            {"name":"service","type":"string"},
            {"name":"request","type":{"type":"record","name":"Req","fields":[
                {"name":"latency_ms","type":"long"},
                {"name":"status","type":"int","default":200},
                {"name":"tags","type":{"type":"map","values":"long"},"default":{}},
                {"name":"items","type":{"type":"array","items":{"type":"record","name":"It","fields":[{"name":"name","type":"string"}]}},"default":[]}
            ]}},
            {"name":"color","type":["null",{"type":"enum","name":"C","symbols":["RED"]}],"default":null}
        ]}"#,
    );
    let e = |json: &str| encode_err(&s, json);
    assert_eq!(
        e(r#"{"service":"a","request":{"latency_ms":"abc"}}"#),
        r#"field `request.latency_ms`: expected long, got string "abc""#
    );
    assert_eq!(e(r#"{"request":{"latency_ms":1}}"#), "missing field `service` (no default)");
    assert_eq!(e(r#"{"service":"a","request":{"latency_ms":1},"colour":null}"#), "field `colour` is not in the schema");
    assert_eq!(
        e(r#"{"service":"a","request":{"latency_ms":1,"extra":1}}"#),
        "field `request.extra` is not in the schema"
    );
    assert_eq!(
        e(r#"{"service":"a","request":{"latency_ms":1.5}}"#),
        "field `request.latency_ms`: expected long, got number 1.5"
    );
    assert_eq!(
        e(r#"{"service":"a","request":{"latency_ms":1,"status":3000000000}}"#),
        "field `request.status`: value 3000000000 out of range for int"
    );
    assert_eq!(
        e(r#"{"service":"a","request":{"latency_ms":1,"tags":{"env":"prod"}}}"#),
        r#"field `request.tags.env`: expected long, got string "prod""#
    );
    assert_eq!(
        e(r#"{"service":"a","request":{"latency_ms":1,"items":[{"name":"x"},{"name":5}]}}"#),
        "field `request.items[1].name`: expected string, got number 5"
    );
    assert_eq!(
        e(r#"{"service":"a","request":{"latency_ms":1},"color":"BLUE"}"#),
        r#"field `color`: unknown enum symbol "BLUE" (symbols: RED)"#
    );
    assert_eq!(
        e(r#"{"service":"a","request":{"latency_ms":1},"color":7}"#),
        "field `color`: expected null or enum C, got number 7"
    );
    assert_eq!(
        e(r#"{"service":true,"request":{"latency_ms":1}}"#),
        "field `service`: expected string, got boolean true"
    );
    assert_eq!(e(r#"{"service":"a","request":[]}"#), "field `request`: expected record Req, got array");
    assert_eq!(e(r#"[1]"#), "expected record Ev, got array");
    assert!(
        e(r#"{"service":"a""#).starts_with("invalid json: EOF while parsing an object at line 1"),
        "{}",
        e(r#"{"service":"a""#)
    );
    assert!(e(r#"{"service":"a","request":{"latency_ms":1}} x"#).starts_with("invalid json: trailing characters"));
}

#[test]
fn encode_rejects_values_that_do_not_fit() {
    let e = |s: &str, json: &str| encode_err(&schema(s), json);
    assert_eq!(e(r#""bytes""#, r#""\u0100""#), r#"string "Ā" has a char above U+00FF, not a byte"#);
    assert_eq!(e(r#"{"type":"fixed","name":"F","size":2}"#, r#""abc""#), "expected 2 bytes for fixed, got 3");
    assert_eq!(e(r#""float""#, "1e300"), "value 1e300 out of range for float");
    assert_eq!(e(r#""int""#, "-2147483649"), "value -2147483649 out of range for int");
    assert_eq!(e(r#""long""#, "18446744073709551615"), "value 18446744073709551615 out of range for long");
    assert_eq!(e(r#""long""#, "1e30"), "value 1e30 out of range for long");
    let dec = r#"{"type":"bytes","logicalType":"decimal","precision":4,"scale":2}"#;
    assert_eq!(e(dec, r#""123.45""#), "decimal has 5 digits at scale 2, more than precision 4");
    assert_eq!(e(dec, r#""1.234""#), "decimal has more fraction digits than scale 2");
    assert_eq!(e(dec, r#""abc""#), r#"invalid decimal "abc""#);
    let decf = r#"{"type":"fixed","name":"F","size":1,"logicalType":"decimal","precision":4,"scale":0}"#;
    assert_eq!(e(decf, "200"), "decimal does not fit in 1 bytes");
    assert_eq!(e(r#"{"type":"string","logicalType":"uuid"}"#, r#""not-a-uuid""#), r#"invalid uuid "not-a-uuid""#);
    assert!(e(r#"{"type":"int","logicalType":"date"}"#, r#""2023-02-29""#).starts_with("invalid date"));
    assert_eq!(e(r#"{"type":"int","logicalType":"time-millis"}"#, "86400000"), "time 86400000 is not within one day");
    assert!(
        e(r#"{"type":"long","logicalType":"timestamp-millis"}"#, r#""2024-05-01T10:00:00""#)
            .starts_with("invalid timestamp")
    );
    assert_eq!(e(r#"["null","long"]"#, r#""x""#), r#"expected null or long, got string "x""#);
    assert_eq!(
        e(r#"{"type":"fixed","name":"Dur","size":12,"logicalType":"duration"}"#, r#"{"months":1,"days":2}"#),
        "missing field `millis` (no default)"
    );
}

#[test]
fn union_errors_report_the_branch_that_fit_best() {
    let s = schema(
        r#"{"type":"record","name":"Ev","fields":[{"name":"r","type":["null",
            {"type":"record","name":"In","fields":[{"name":"x","type":"int"}]},{"type":"map","values":"int"}]}]}"#,
    );
    // The object fits the record's shape; the record's complaint is more useful than "no branch".
    assert_eq!(encode_err(&s, r#"{"r":{"x":"s"}}"#), r#"field `r.x`: expected int, got string "s""#);
}

#[test]
fn encoder_is_reusable_after_errors() {
    let s = schema(r#"{"type":"record","name":"R","fields":[{"name":"b","type":"int"},{"name":"a","type":"int"}]}"#);
    let enc = Encoder::new(&s).unwrap();
    let mut out = Vec::new();
    for i in 0..3 {
        assert!(enc.encode_json(br#"{"a":1,"b":"x"}"#, &mut out).is_err());
        assert!(enc.encode_json(br#"{"a":1,"zz":2}"#, &mut out).is_err());
        enc.encode_json(format!(r#"{{"a":{i},"b":2}}"#).as_bytes(), &mut out).unwrap();
    }
    assert_eq!(out, [4, 0, 4, 2, 4, 4]);
}

#[test]
fn invalid_defaults_fail_at_compile_time() {
    let s = schema(
        r#"{"type":"record","name":"R","fields":[{"name":"d","type":{"type":"fixed","name":"F","size":2},"default":"\u0001\u0002"},
        {"name":"b","type":"bytes","default":"\u0100"}]}"#,
    );
    // apache-avro accepts this default (it takes the string's UTF-8 bytes); in Avro's JSON convention each
    // char is one byte, and U+0100 is none.
    let err = Encoder::new(&s).err().expect("a bytes default with a char above U+00FF").to_string();
    assert_eq!(err, r#"invalid default for field `R.b`: string "Ā" has a char above U+00FF, not a byte"#);
}
