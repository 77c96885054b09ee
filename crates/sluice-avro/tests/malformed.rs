//! Malformed input never panics: random and mutated bytes for the decoder, random JSON for the encoder.
//! Whatever is accepted must be valid (the decoder writes parseable JSON; encoded bytes decode again).

use proptest::prelude::*;
use serde_json::{Value, json};
use sluice_avro::{Decoder, Encoder, Schema};

const RICH: &str = r#"{"type":"record","name":"Rich","namespace":"t","fields":[
    {"name":"i","type":"int","default":0},
    {"name":"l","type":["null","long"],"default":null},
    {"name":"s","type":"string","default":""},
    {"name":"b","type":"bytes","default":""},
    {"name":"f","type":"float","default":0},
    {"name":"d","type":"double","default":0},
    {"name":"e","type":{"type":"enum","name":"E","symbols":["A","B","C"],"default":"A"},"default":"A"},
    {"name":"x","type":{"type":"fixed","name":"X","size":3},"default":"abc"},
    {"name":"a","type":{"type":"array","items":["null","string",{"type":"map","values":"int"}]},"default":[]},
    {"name":"m","type":{"type":"map","values":{"type":"array","items":"Rich"}},"default":{}},
    {"name":"u","type":["null","boolean","int","string","X",{"type":"array","items":"long"},
        {"type":"record","name":"In","fields":[{"name":"v","type":"int","default":1}]}],"default":null},
    {"name":"date","type":{"type":"int","logicalType":"date"},"default":0},
    {"name":"ts","type":{"type":"long","logicalType":"timestamp-micros"},"default":0},
    {"name":"tm","type":{"type":"int","logicalType":"time-millis"},"default":0},
    {"name":"dec","type":["null",{"type":"bytes","logicalType":"decimal","precision":10,"scale":3}],"default":null},
    {"name":"decf","type":["null",{"type":"fixed","name":"DF","size":4,"logicalType":"decimal","precision":9,"scale":2}],"default":null},
    {"name":"big","type":["null",{"type":"bytes","logicalType":"big-decimal"}],"default":null},
    {"name":"uuid","type":["null",{"type":"string","logicalType":"uuid"}],"default":null},
    {"name":"dur","type":["null",{"type":"fixed","name":"Dur","size":12,"logicalType":"duration"}],"default":null},
    {"name":"next","type":["null","Rich"],"default":null}
]}"#;

/// RICH evolved: some fields removed (so their bytes are skipped), promotions, a new field.
const RICH_READER: &str = r#"{"type":"record","name":"Rich","namespace":"t","fields":[
    {"name":"l","type":["null","double"],"default":null},
    {"name":"i","type":"long"},
    {"name":"s","type":"bytes"},
    {"name":"e","type":{"type":"enum","name":"E","symbols":["B","A"],"default":"A"}},
    {"name":"new","type":["string","null"],"default":"n"},
    {"name":"u","type":["null","string","long",{"type":"record","name":"In","fields":[{"name":"v","type":"long"}]}],"default":null},
    {"name":"next","type":["null","Rich"],"default":null}
]}"#;

fn schemas() -> Vec<(Schema, Schema)> {
    let rich = Schema::parse_str(RICH).unwrap();
    let reader = Schema::parse_str(RICH_READER).unwrap();
    let simple = Schema::parse_str(r#"{"type":"array","items":["null","string","double"]}"#).unwrap();
    vec![(rich.clone(), rich.clone()), (rich, reader), (simple.clone(), simple)]
}

/// Decoding must fail cleanly or produce valid JSON, leaving earlier output alone on failure.
fn check_decode(dec: &Decoder, bytes: &[u8]) {
    let mut out = b"prefix".to_vec();
    match dec.decode_to_json(bytes, &mut out) {
        Ok(()) => {
            if let Err(e) = serde_json::from_slice::<Value>(&out[6..]) {
                panic!("invalid json ({e}): {}", String::from_utf8_lossy(&out[6..]));
            }
        }
        Err(_) => assert_eq!(out, b"prefix"),
    }
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
        "[a-zA-Z0-9 .:+-]{0,12}".prop_map(Value::from),
        any::<String>().prop_map(Value::from),
        prop::sample::select(vec![
            "A",
            "B",
            "abc",
            "NaN",
            "2024-01-01",
            "12:00:00.000",
            "2024-01-01T00:00:00Z",
            "1.5",
            "-12.345",
            "550e8400-e29b-41d4-a716-446655440000",
            "\u{ff}\u{0}\u{1}\u{2}",
        ])
        .prop_map(Value::from),
    ];
    let names = prop::sample::select(vec![
        "i", "l", "s", "b", "f", "d", "e", "x", "a", "m", "u", "v", "date", "ts", "tm", "dec", "decf", "big", "uuid",
        "dur", "next", "long", "string", "t.In", "In", "X", "array", "months", "days", "millis", "zzz",
    ]);
    leaf.prop_recursive(5, 64, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::vec((names.clone(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect())),
        ]
    })
}

proptest! {
    // PROPTEST_CASES raises the count for a longer run.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(2000),
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        for (w, r) in schemas() {
            check_decode(&Decoder::new(&w, &r).unwrap(), &bytes);
        }
    }

    #[test]
    fn mutated_valid_bodies_never_panic(
        json in json_value(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
    ) {
        let (w, r) = schemas().swap_remove(1);
        let enc = Encoder::new(&w).unwrap();
        let mut body = Vec::new();
        // Most random JSON does not fit; fall back to a valid value so mutations hit real structure.
        if enc.encode_json(json.to_string().as_bytes(), &mut body).is_err() {
            enc.encode_json(br#"{"s":"x","a":[null,"y",{"k":1}],"m":{"q":[{"i":5}]},"u":{"t.In":{}},"next":{"e":"C"}}"#, &mut body).unwrap();
        }
        let dec = Decoder::new(&w, &r).unwrap();
        check_decode(&dec, &body);
        let mut mutated = body.clone();
        for (at, byte) in &flips {
            let i = at.index(mutated.len());
            mutated[i] = *byte;
        }
        check_decode(&dec, &mutated);
        check_decode(&dec, &body[..cut.index(body.len() + 1)]);
    }

    #[test]
    fn random_json_never_panics_and_what_encodes_decodes(json in json_value()) {
        let schema = Schema::parse_str(RICH).unwrap();
        let enc = Encoder::new(&schema).unwrap();
        let text = json.to_string();
        let mut out = vec![9];
        match enc.encode_json(text.as_bytes(), &mut out) {
            Ok(()) => {
                let mut back = Vec::new();
                Decoder::new(&schema, &schema).unwrap().decode_to_json(&out[1..], &mut back)
                    .map_err(|e| TestCaseError::fail(format!("{e} for {text}")))?;
                let again = apache_avro::from_avro_datum(&schema, &mut &out[1..], None);
                prop_assert!(again.is_ok(), "apache-avro cannot read what {} encoded to: {:?}", text, again);
            }
            Err(_) => prop_assert_eq!(out, vec![9]),
        }
    }

    #[test]
    fn random_text_never_panics(text in prop::collection::vec(any::<u8>(), 0..64)) {
        for (w, _) in schemas() {
            let _ = Encoder::new(&w).unwrap().encode_json(&text, &mut Vec::new());
        }
    }
}

#[test]
fn deep_json_is_refused_cleanly() {
    let schema = Schema::parse_str(RICH).unwrap();
    let deep = format!("{}{}", r#"{"next":"#.repeat(5000), "}".repeat(5000));
    let err = Encoder::new(&schema).unwrap().encode_json(deep.as_bytes(), &mut Vec::new()).unwrap_err();
    assert!(err.to_string().contains("recursion limit exceeded"), "{err}");
    let deep = json!([[[[[[[[[[1]]]]]]]]]]).to_string();
    assert!(Encoder::new(&schema).unwrap().encode_json(deep.as_bytes(), &mut Vec::new()).is_err());
}

#[test]
fn invalid_utf8_json_is_refused() {
    let schema = Schema::parse_str(r#""string""#).unwrap();
    let err = Encoder::new(&schema).unwrap().encode_json(b"\"\xff\"", &mut Vec::new()).unwrap_err();
    assert_eq!(err.to_string(), "invalid json: input is not valid utf-8 at byte 1");
}
