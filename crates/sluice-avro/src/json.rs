//! JSON text output helpers: string escaping identical to serde_json's, Avro's "one char per byte" form for
//! bytes and fixed, and number formatting through serde_json's own formatter (so output parses back exactly).

use serde_json::ser::{CompactFormatter, Formatter};

const HEX: &[u8; 16] = b"0123456789abcdef";

/// What to write for each byte below 0x80: 0 = as is, b'u' = `\u00XX`, anything else = `\` + that byte.
/// Mirrors serde_json's escape table so decoded text is byte-identical to `serde_json::to_string`.
static ESCAPE: [u8; 128] = {
    let mut table = [0u8; 128];
    let mut i = 0;
    while i < 0x20 {
        table[i] = b'u';
        i += 1;
    }
    table[0x08] = b'b';
    table[0x09] = b't';
    table[0x0a] = b'n';
    table[0x0c] = b'f';
    table[0x0d] = b'r';
    table[b'"' as usize] = b'"';
    table[b'\\' as usize] = b'\\';
    table
};

#[inline]
fn write_escape(out: &mut Vec<u8>, byte: u8, esc: u8) {
    if esc == b'u' {
        out.extend_from_slice(&[b'\\', b'u', b'0', b'0', HEX[(byte >> 4) as usize], HEX[(byte & 0xf) as usize]]);
    } else {
        out.extend_from_slice(&[b'\\', esc]);
    }
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGH: u64 = 0x8080_8080_8080_8080;

/// The high bit of each of the 8 bytes (little-endian) that is a control char, `"` or `\\`, with possible
/// false marks only above a true one: the lowest mark is exact. Bytes >= 0x80 are never marked.
#[inline]
fn escape_mask(x: u64) -> u64 {
    let zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
    (x.wrapping_sub(ONES * 0x20) & !x & HIGH) | zero(x ^ (ONES * u64::from(b'"'))) | zero(x ^ (ONES * u64::from(b'\\')))
}

/// The 8 bytes at `i` as a little-endian word, if there are 8.
#[inline]
fn word_at(bytes: &[u8], i: usize) -> Option<u64> {
    let chunk = bytes.get(i..i.checked_add(8)?)?;
    let mut word = [0u8; 8];
    word.copy_from_slice(chunk);
    Some(u64::from_le_bytes(word))
}

/// Writes UTF-8 `bytes` as a quoted JSON string, checking UTF-8 as it goes unless `valid`: all-ASCII text
/// is checked by the escape scan itself, and only the part from the first non-ASCII byte goes through
/// `str::from_utf8`. On invalid UTF-8 returns false, with a partial string written.
#[inline]
fn write_utf8_inner(out: &mut Vec<u8>, bytes: &[u8], mut valid: bool) -> bool {
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        if let Some(x) = word_at(bytes, i) {
            if !valid && x & HIGH != 0 {
                // Everything before `i` was ASCII, so `i` starts a char.
                if std::str::from_utf8(&bytes[i..]).is_err() {
                    return false;
                }
                valid = true;
            }
            let mask = escape_mask(x);
            if mask == 0 {
                i += 8;
                continue;
            }
            // Straight to the first byte that needs escaping.
            i += (mask.trailing_zeros() / 8) as usize;
        }
        let b = bytes[i];
        if b >= 0x80 {
            if !valid {
                if std::str::from_utf8(&bytes[i..]).is_err() {
                    return false;
                }
                valid = true;
            }
        } else {
            let esc = ESCAPE[b as usize];
            if esc != 0 {
                out.extend_from_slice(&bytes[start..i]);
                write_escape(out, b, esc);
                start = i + 1;
            }
        }
        i += 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
    true
}

/// Writes `s` as a quoted JSON string.
#[inline]
pub(crate) fn write_str(out: &mut Vec<u8>, s: &str) {
    write_utf8_inner(out, s.as_bytes(), true);
}

/// Writes UTF-8 bytes as a quoted JSON string; `false` (with partial output) when they are not UTF-8.
#[inline]
pub(crate) fn write_utf8(out: &mut Vec<u8>, bytes: &[u8]) -> bool {
    write_utf8_inner(out, bytes, false)
}

/// Writes raw bytes as a JSON string in which each byte is the char of the same code (U+0000..U+00FF),
/// Avro's JSON convention for `bytes` and `fixed`.
pub(crate) fn write_latin1(out: &mut Vec<u8>, bytes: &[u8]) {
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if b >= 0x80 {
            out.extend_from_slice(&bytes[start..i]);
            out.extend_from_slice(&[0xc0 | (b >> 6), 0x80 | (b & 0x3f)]);
            start = i + 1;
            continue;
        }
        let esc = ESCAPE[b as usize];
        if esc == 0 {
            continue;
        }
        out.extend_from_slice(&bytes[start..i]);
        write_escape(out, b, esc);
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

#[inline]
pub(crate) fn write_i64(out: &mut Vec<u8>, v: i64) {
    // Writing into a Vec cannot fail.
    let _ = CompactFormatter.write_i64(out, v);
}

/// Non-finite values have no JSON number form; they are written as the strings Java's Avro uses.
pub(crate) fn write_f64(out: &mut Vec<u8>, v: f64) {
    if v.is_finite() {
        let _ = CompactFormatter.write_f64(out, v);
    } else {
        out.extend_from_slice(non_finite(v.is_nan(), v > 0.0));
    }
}

pub(crate) fn write_f32(out: &mut Vec<u8>, v: f32) {
    if v.is_finite() {
        let _ = CompactFormatter.write_f32(out, v);
    } else {
        out.extend_from_slice(non_finite(v.is_nan(), v > 0.0));
    }
}

fn non_finite(nan: bool, positive: bool) -> &'static [u8] {
    if nan {
        b"\"NaN\""
    } else if positive {
        b"\"Infinity\""
    } else {
        b"\"-Infinity\""
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_matches_serde_json() {
        let mut all = String::new();
        for c in (0u32..0x100).chain([0x2028, 0x1F600]) {
            all.push(char::from_u32(c).unwrap());
        }
        for s in ["", "plain", "quote\"back\\slash", "\u{7f}\u{0}\n\t", all.as_str()] {
            let mut out = Vec::new();
            write_str(&mut out, s);
            assert_eq!(String::from_utf8(out).unwrap(), serde_json::to_string(s).unwrap());
        }
    }

    #[test]
    fn utf8_checked_while_escaping() {
        for s in [
            "",
            "short",
            "exactly8",
            "a longer ascii string with \"quotes\" and \\ and \n",
            "ascii then é",
            "é first, then ascii text",
        ] {
            let mut out = Vec::new();
            assert!(write_utf8(&mut out, s.as_bytes()));
            assert_eq!(String::from_utf8(out).unwrap(), serde_json::to_string(s).unwrap());
        }
        for bad in [&b"\xff"[..], b"12345678\xc3", b"1234567\xc3(", b"abc\xed\xa0\x80def", b"0123456789abcdef\x80"] {
            assert!(!write_utf8(&mut Vec::new(), bad), "{bad:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn utf8_scan_agrees_with_std_and_serde_json(
            bytes in proptest::collection::vec(proptest::prop_oneof![0u8..0x80, 0x80u8..=0xff, proptest::strategy::Just(b'"')], 0..40)
        ) {
            let mut out = Vec::new();
            let ok = write_utf8(&mut out, &bytes);
            match std::str::from_utf8(&bytes) {
                Ok(s) => {
                    proptest::prop_assert!(ok);
                    proptest::prop_assert_eq!(String::from_utf8(out).unwrap(), serde_json::to_string(s).unwrap());
                }
                Err(_) => proptest::prop_assert!(!ok),
            }
        }
    }

    #[test]
    fn latin1_bytes_are_one_char_each() {
        let bytes: Vec<u8> = (0..=255).collect();
        let mut out = Vec::new();
        write_latin1(&mut out, &bytes);
        let text: String = serde_json::from_slice(&out).unwrap();
        let back: Vec<u8> = text.chars().map(|c| c as u32 as u8).collect();
        assert_eq!(text.chars().count(), 256);
        assert_eq!(back, bytes);
    }

    #[test]
    fn numbers() {
        let mut out = Vec::new();
        write_i64(&mut out, i64::MIN);
        out.push(b' ');
        write_f64(&mut out, 35.0);
        out.push(b' ');
        write_f32(&mut out, 0.1);
        out.push(b' ');
        write_f64(&mut out, f64::NAN);
        out.push(b' ');
        write_f32(&mut out, f32::NEG_INFINITY);
        assert_eq!(String::from_utf8(out).unwrap(), "-9223372036854775808 35.0 0.1 \"NaN\" \"-Infinity\"");
    }
}
