//! Interop with an independent Avro implementation: Apache Avro for Python (Debian's `python3-avro`, which
//! installs for /usr/bin/python3).
//!
//! 1. Python writes a schemaless datum with schema v1; Sluice reads it with v2 (adds a field with a default)
//!    and v3 (also removes a field, renames one via an alias, promotes int->long and float->double, drops an
//!    enum symbol for the enum default, reorders a union).
//! 2. Sluice encodes JSON with v3; Python reads it with v3 and prints JSON, which must match.
//!
//! Without python3-avro the tests print a skip message and pass, unless `SLUICE_TEST_PYTHON_AVRO=1`, when
//! they fail (CI sets it after installing the package).

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::*;
use serde_json::{Value, json};
use sluice_avro::{Decoder, Encoder};

const PYTHON: &str = "/usr/bin/python3";

const V1: &str = r#"{"type":"record","name":"Event","namespace":"com.acme","fields":[
    {"name":"id","type":"int"},
    {"name":"name","type":"string"},
    {"name":"legacy","type":{"type":"map","values":{"type":"array","items":"string"}}},
    {"name":"kind","type":{"type":"enum","name":"Kind","symbols":["A","B","C"]}},
    {"name":"score","type":"float"},
    {"name":"at","type":{"type":"long","logicalType":"timestamp-millis"}},
    {"name":"amount","type":{"type":"bytes","logicalType":"decimal","precision":10,"scale":2}},
    {"name":"blob","type":"bytes"},
    {"name":"maybe","type":["null","string"]}
]}"#;

const V2: &str = r#"{"type":"record","name":"Event","namespace":"com.acme","fields":[
    {"name":"id","type":"int"},
    {"name":"name","type":"string"},
    {"name":"legacy","type":{"type":"map","values":{"type":"array","items":"string"}}},
    {"name":"kind","type":{"type":"enum","name":"Kind","symbols":["A","B","C"]}},
    {"name":"score","type":"float"},
    {"name":"at","type":{"type":"long","logicalType":"timestamp-millis"}},
    {"name":"amount","type":{"type":"bytes","logicalType":"decimal","precision":10,"scale":2}},
    {"name":"blob","type":"bytes"},
    {"name":"maybe","type":["null","string"]},
    {"name":"region","type":"string","default":"eu-west-1"}
]}"#;

const V3: &str = r#"{"type":"record","name":"Event","namespace":"com.acme","fields":[
    {"name":"id","type":"long"},
    {"name":"full_name","type":"string","aliases":["name"]},
    {"name":"kind","type":{"type":"enum","name":"Kind","symbols":["A","B"],"default":"A"}},
    {"name":"score","type":"double"},
    {"name":"at","type":{"type":"long","logicalType":"timestamp-millis"}},
    {"name":"amount","type":{"type":"bytes","logicalType":"decimal","precision":10,"scale":2}},
    {"name":"blob","type":"bytes"},
    {"name":"maybe","type":["string","null"]},
    {"name":"region","type":"string","default":"eu-west-1"}
]}"#;

/// `write SCHEMA`: reads a JSON datum on stdin (timestamps as epoch millis, decimals and bytes as strings),
/// prints the hex of its binary encoding. `read WRITER READER`: reads hex on stdin, prints the datum as JSON
/// in Sluice's conventions.
const SCRIPT: &str = r#"
import sys, io, json, decimal, datetime
import avro.schema, avro.io

def to_python(schema, v):
    t = schema.type
    lt = schema.get_prop("logicalType")
    if t == "record":
        return {f.name: to_python(f.type, v[f.name]) for f in schema.fields}
    if t == "map":
        return {k: to_python(schema.values, x) for k, x in v.items()}
    if t == "array":
        return [to_python(schema.items, x) for x in v]
    if t == "union":
        if v is None:
            return None
        branch = [b for b in schema.schemas if b.type != "null"][0]
        return to_python(branch, v)
    if lt == "timestamp-millis":
        return datetime.datetime.fromtimestamp(v / 1000, tz=datetime.timezone.utc)
    if lt == "decimal":
        return decimal.Decimal(v)
    if t == "bytes":
        return v.encode("latin-1")
    return v

def to_json(v):
    if isinstance(v, dict):
        return {k: to_json(x) for k, x in v.items()}
    if isinstance(v, list):
        return [to_json(x) for x in v]
    if isinstance(v, datetime.datetime):
        return v.strftime("%Y-%m-%dT%H:%M:%S") + ".%03dZ" % (v.microsecond // 1000)
    if isinstance(v, decimal.Decimal):
        return str(v)
    if isinstance(v, bytes):
        return v.decode("latin-1")
    return v

if sys.argv[1] == "write":
    schema = avro.schema.parse(sys.argv[2])
    buf = io.BytesIO()
    avro.io.DatumWriter(schema).write(to_python(schema, json.load(sys.stdin)), avro.io.BinaryEncoder(buf))
    print(buf.getvalue().hex())
else:
    writer, reader = avro.schema.parse(sys.argv[2]), avro.schema.parse(sys.argv[3])
    data = bytes.fromhex(sys.stdin.read().strip())
    decoder = avro.io.BinaryDecoder(io.BytesIO(data))
    datum = avro.io.DatumReader(writer, reader).read(decoder)
    if decoder.reader.read(1):
        sys.exit("trailing bytes after the datum")
    print(json.dumps(to_json(datum)))
"#;

/// Whether the tests can run; panics when they must but cannot.
fn python_avro_available() -> bool {
    let ok =
        Command::new(PYTHON).args(["-c", "import avro.io, avro.schema"]).output().is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var("SLUICE_TEST_PYTHON_AVRO").as_deref() != Ok("1"),
            "SLUICE_TEST_PYTHON_AVRO=1 but `{PYTHON} -c 'import avro'` fails: install python3-avro"
        );
        eprintln!("skipping: {PYTHON} has no avro module (apt-get install python3-avro)");
    }
    ok
}

fn python(args: &[&str], stdin: &str) -> String {
    let mut child = Command::new(PYTHON)
        .arg("-c")
        .arg(SCRIPT)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start python");
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "python failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

#[test]
fn sluice_reads_python_written_data_with_evolved_schemas() {
    if !python_avro_available() {
        return;
    }
    let datum = json!({"id": 7, "name": "Ada", "legacy": {"k": ["x", "y"], "e": []}, "kind": "C", "score": 1.5,
        "at": 1_714_557_600_500i64, "amount": "-12.30", "blob": "\u{0}\u{ff}", "maybe": "m"});
    let avro = unhex(&python(&["write", V1], &datum.to_string()));
    let (v1, v2, v3) = (schema(V1), schema(V2), schema(V3));

    let mut out = Vec::new();
    Decoder::new(&v1, &v2).unwrap().decode_to_json(&avro, &mut out).unwrap();
    let got: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(
        got,
        json!({"id": 7, "name": "Ada", "legacy": {"k": ["x", "y"], "e": []}, "kind": "C", "score": 1.5,
            "at": "2024-05-01T10:00:00.500Z", "amount": "-12.30", "blob": "\u{0}\u{ff}", "maybe": "m", "region": "eu-west-1"})
    );

    assert_eq!(
        decode_text(&v1, &v3, &avro),
        r#"{"id":7,"full_name":"Ada","kind":"A","score":1.5,"at":"2024-05-01T10:00:00.500Z","amount":"-12.30","blob":"\u0000ÿ","maybe":"m","region":"eu-west-1"}"#
    );
}

#[test]
fn python_reads_sluice_written_data() {
    if !python_avro_available() {
        return;
    }
    let v3 = schema(V3);
    let input = r#"{"id":9007199254740993,"full_name":"Grace \"G\" ✓","kind":"B","score":0.1,"at":"2024-05-01T12:00:00.250+02:00",
        "amount":"1234.5","blob":"\u0001\u00fe","maybe":null}"#;
    let mut avro = Vec::new();
    Encoder::new(&v3).unwrap().encode_json(input.as_bytes(), &mut avro).unwrap();
    let printed = python(&["read", V3, V3], &hex(&avro));
    let got: Value = serde_json::from_str(&printed).unwrap();
    assert_eq!(
        got,
        json!({"id": 9_007_199_254_740_993i64, "full_name": "Grace \"G\" ✓", "kind": "B", "score": 0.1,
            "at": "2024-05-01T10:00:00.250Z", "amount": "1234.50", "blob": "\u{1}\u{fe}", "maybe": null, "region": "eu-west-1"})
    );
    // And what Python prints is what Sluice's own decoder prints.
    assert_eq!(got, decode(&v3, &v3, &avro));
}
