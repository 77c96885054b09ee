//! The Confluent wire format: magic byte 0, the 4-byte big-endian schema id, then the Avro body.

use crate::error::WireError;

/// The first byte of every framed message.
pub const MAGIC: u8 = 0;

/// Length of the header before the body.
pub const HEADER_LEN: usize = 5;

/// Appends the header for `schema_id` and then `body` to `out`.
pub fn frame(schema_id: u32, body: &[u8], out: &mut Vec<u8>) {
    out.reserve(HEADER_LEN + body.len());
    out.push(MAGIC);
    out.extend_from_slice(&schema_id.to_be_bytes());
    out.extend_from_slice(body);
}

/// Splits a framed message into its schema id and Avro body.
pub fn parse(bytes: &[u8]) -> Result<(u32, &[u8]), WireError> {
    match bytes {
        [] => Err(WireError::Empty),
        [magic, ..] if *magic != MAGIC => Err(WireError::BadMagic(*magic)),
        [_, a, b, c, d, body @ ..] => Ok((u32::from_be_bytes([*a, *b, *c, *d]), body)),
        _ => Err(WireError::TooShort(bytes.len())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_then_parse() {
        let mut out = vec![9];
        frame(0x0102_0304, b"body", &mut out);
        assert_eq!(out, [9, 0, 1, 2, 3, 4, b'b', b'o', b'd', b'y']);
        assert_eq!(parse(&out[1..]), Ok((0x0102_0304, &b"body"[..])));
        let mut empty_body = Vec::new();
        frame(u32::MAX, b"", &mut empty_body);
        assert_eq!(parse(&empty_body), Ok((u32::MAX, &b""[..])));
    }

    #[test]
    fn errors() {
        assert_eq!(parse(&[]), Err(WireError::Empty));
        assert_eq!(parse(&[1, 0, 0, 0, 1]), Err(WireError::BadMagic(1)));
        assert_eq!(parse(&[0, 0, 0, 1]), Err(WireError::TooShort(4)));
        assert_eq!(parse(&[0]).unwrap_err().to_string(), "message of 1 bytes is too short for the 4-byte schema id");
    }
}
