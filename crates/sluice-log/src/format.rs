//! The on-disk record batch format (see `docs/adr/0002-log-format-and-durability.md`).
//!
//! A segment file is a sequence of batches. Each batch, little-endian:
//!
//! ```text
//!  0  u64  base_offset        offset of the first record (not covered by the CRC: set by the writer)
//!  8  u32  length             bytes after this field (so the batch is 12 + length bytes long)
//! 12  u32  crc32c             CRC-32C of bytes 16..end
//! 16  u8   magic              format version, 1
//! 17  u8   attributes         reserved, 0
//! 18  u16  reserved           0
//! 20  u32  record_count       >= 1
//! 24  i64  min_timestamp      event time, ms since the epoch
//! 32  i64  max_timestamp
//! 40  i64  append_time        ingest time of the batch, ms since the epoch
//! 48  records
//! ```
//!
//! A record: `timestamp - min_timestamp` (varint), key length + 1 (varint, 0 = no key) and key bytes, header
//! count (varint) then per header name length, name, value length, value, then value length and value bytes.
//! Offsets inside a batch are implicit: record `i` has offset `base_offset + i`.

use bytes::{BufMut, Bytes};

pub const HEADER_LEN: usize = 48;
pub const MAGIC: u8 = 1;
/// Bytes of the header before the CRC-covered part starts.
const CRC_START: usize = 16;

/// One event as appended to the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Event time, ms since the epoch.
    pub timestamp: i64,
    pub key: Option<Bytes>,
    pub headers: Vec<(String, Bytes)>,
    pub value: Bytes,
}

impl Record {
    /// Bytes this record takes inside a batch: the unit of the event size limit.
    pub fn encoded_len(&self) -> usize {
        let mut n = 10 + 5 + self.key.as_ref().map_or(0, |k| k.len()) + 5;
        for (k, v) in &self.headers {
            n += 10 + k.len() + v.len();
        }
        n + 5 + self.value.len()
    }
}

/// One event as read back from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    pub offset: u64,
    pub timestamp: i64,
    /// When the batch holding this record was appended, ms since the epoch.
    pub append_time: i64,
    pub key: Option<Bytes>,
    pub headers: Vec<(String, Bytes)>,
    pub value: Bytes,
}

/// The fixed part of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: u64,
    pub length: u32,
    pub crc: u32,
    pub record_count: u32,
    pub min_timestamp: i64,
    pub max_timestamp: i64,
    pub append_time: i64,
}

impl BatchHeader {
    /// Total bytes of the batch on disk.
    pub fn total_len(&self) -> u64 {
        12 + self.length as u64
    }
    /// The offset after the last record of this batch.
    pub fn next_offset(&self) -> u64 {
        self.base_offset + self.record_count as u64
    }
}

/// Why a batch could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("batch header has magic {0}, expected {MAGIC}")]
    BadMagic(u8),
    #[error("batch length {0} is out of bounds")]
    BadLength(u32),
    #[error("batch has no records")]
    Empty,
    #[error("batch crc mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    CrcMismatch { stored: u32, computed: u32 },
    #[error("record {index} of batch is malformed: {reason}")]
    BadRecord { index: u32, reason: &'static str },
}

/// A batch encoded in memory, ready for the writer to stamp its base offset.
#[derive(Debug, Clone)]
pub struct EncodedBatch {
    pub bytes: Vec<u8>,
    pub record_count: u32,
    pub append_time: i64,
    pub min_timestamp: i64,
    pub max_timestamp: i64,
}

impl EncodedBatch {
    /// Sets the base offset; the CRC does not cover it, so nothing else changes.
    pub fn set_base_offset(&mut self, base: u64) {
        self.bytes[0..8].copy_from_slice(&base.to_le_bytes());
    }
}

/// Encodes `records` (at least one) as one batch with base offset 0.
pub fn encode_batch(records: &[Record], append_time: i64) -> EncodedBatch {
    assert!(!records.is_empty(), "a batch holds at least one record");
    let min_ts = records.iter().map(|r| r.timestamp).min().expect("non-empty");
    let max_ts = records.iter().map(|r| r.timestamp).max().expect("non-empty");
    let size: usize = HEADER_LEN + records.iter().map(Record::encoded_len).sum::<usize>();
    let mut buf = Vec::with_capacity(size);
    buf.put_u64_le(0);
    buf.put_u32_le(0); // length, patched below
    buf.put_u32_le(0); // crc, patched below
    buf.put_u8(MAGIC);
    buf.put_u8(0);
    buf.put_u16_le(0);
    buf.put_u32_le(records.len() as u32);
    buf.put_i64_le(min_ts);
    buf.put_i64_le(max_ts);
    buf.put_i64_le(append_time);
    for r in records {
        // Wrapping: two event times may lie further apart than `i64::MAX`; decoding adds the delta back wrapping.
        put_varint(&mut buf, r.timestamp.wrapping_sub(min_ts) as u64);
        match &r.key {
            None => put_varint(&mut buf, 0),
            Some(k) => {
                put_varint(&mut buf, k.len() as u64 + 1);
                buf.extend_from_slice(k);
            }
        }
        put_varint(&mut buf, r.headers.len() as u64);
        for (k, v) in &r.headers {
            put_varint(&mut buf, k.len() as u64);
            buf.extend_from_slice(k.as_bytes());
            put_varint(&mut buf, v.len() as u64);
            buf.extend_from_slice(v);
        }
        put_varint(&mut buf, r.value.len() as u64);
        buf.extend_from_slice(&r.value);
    }
    let length = (buf.len() - 12) as u32;
    buf[8..12].copy_from_slice(&length.to_le_bytes());
    let crc = crc32c::crc32c(&buf[CRC_START..]);
    buf[12..16].copy_from_slice(&crc.to_le_bytes());
    EncodedBatch {
        bytes: buf,
        record_count: records.len() as u32,
        append_time,
        min_timestamp: min_ts,
        max_timestamp: max_ts,
    }
}

/// Parses and sanity-checks a batch header. Callers bound the length by the bytes actually there before they
/// read the body.
pub fn parse_header(buf: &[u8; HEADER_LEN]) -> Result<BatchHeader, FormatError> {
    let u32_at = |i: usize| u32::from_le_bytes(buf[i..i + 4].try_into().expect("4 bytes"));
    let i64_at = |i: usize| i64::from_le_bytes(buf[i..i + 8].try_into().expect("8 bytes"));
    let length = u32_at(8);
    if (length as u64) < (HEADER_LEN - 12) as u64 {
        return Err(FormatError::BadLength(length));
    }
    if buf[16] != MAGIC {
        return Err(FormatError::BadMagic(buf[16]));
    }
    let record_count = u32_at(20);
    if record_count == 0 {
        return Err(FormatError::Empty);
    }
    Ok(BatchHeader {
        base_offset: u64::from_le_bytes(buf[0..8].try_into().expect("8 bytes")),
        length,
        crc: u32_at(12),
        record_count,
        min_timestamp: i64_at(24),
        max_timestamp: i64_at(32),
        append_time: i64_at(40),
    })
}

/// Checks the CRC of a whole batch (`batch` is all `total_len` bytes, header included).
pub fn verify_crc(header: &BatchHeader, batch: &[u8]) -> Result<(), FormatError> {
    let computed = crc32c::crc32c(&batch[CRC_START..]);
    if computed != header.crc {
        return Err(FormatError::CrcMismatch { stored: header.crc, computed });
    }
    Ok(())
}

/// Decodes the records of a CRC-checked batch whose offsets are `>= from`, appending them to `out`.
/// Keys and values are zero-copy slices of `batch`.
pub fn decode_records(
    header: &BatchHeader,
    batch: &Bytes,
    from: u64,
    out: &mut Vec<StoredRecord>,
) -> Result<(), FormatError> {
    let mut cur = Cursor { buf: batch, pos: HEADER_LEN };
    for index in 0..header.record_count {
        let bad = |reason| FormatError::BadRecord { index, reason };
        let ts_delta = cur.varint().ok_or(bad("timestamp"))?;
        let key = match cur.varint().ok_or(bad("key length"))? {
            0 => None,
            n => Some(cur.bytes(n - 1).ok_or(bad("key"))?),
        };
        let header_count = cur.varint().ok_or(bad("header count"))?;
        let mut headers = Vec::with_capacity(header_count.min(64) as usize);
        for _ in 0..header_count {
            let klen = cur.varint().ok_or(bad("header name length"))?;
            let k = cur.bytes(klen).ok_or(bad("header name"))?;
            let name = String::from_utf8(k.to_vec()).map_err(|_| bad("header name is not utf-8"))?;
            let vlen = cur.varint().ok_or(bad("header value length"))?;
            headers.push((name, cur.bytes(vlen).ok_or(bad("header value"))?));
        }
        let vlen = cur.varint().ok_or(bad("value length"))?;
        let value = cur.bytes(vlen).ok_or(bad("value"))?;
        let offset = header.base_offset + index as u64;
        if offset >= from {
            out.push(StoredRecord {
                offset,
                timestamp: header.min_timestamp.wrapping_add(ts_delta as i64),
                append_time: header.append_time,
                key,
                headers,
                value,
            });
        }
    }
    if cur.pos != batch.len() {
        return Err(FormatError::BadRecord { index: header.record_count, reason: "trailing bytes" });
    }
    Ok(())
}

struct Cursor<'a> {
    buf: &'a Bytes,
    pos: usize,
}

impl Cursor<'_> {
    fn varint(&mut self) -> Option<u64> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = *self.buf.get(self.pos)?;
            self.pos += 1;
            v |= ((b & 0x7f) as u64) << shift;
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }

    fn bytes(&mut self, n: u64) -> Option<Bytes> {
        let end = self.pos.checked_add(usize::try_from(n).ok()?)?;
        if end > self.buf.len() {
            return None;
        }
        let b = self.buf.slice(self.pos..end);
        self.pos = end;
        Some(b)
    }
}

fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rec(ts: i64, key: Option<&str>, value: &str) -> Record {
        Record {
            timestamp: ts,
            key: key.map(|k| Bytes::copy_from_slice(k.as_bytes())),
            headers: vec![("traceparent".into(), Bytes::from_static(b"00-abc-def-01"))],
            value: Bytes::copy_from_slice(value.as_bytes()),
        }
    }

    fn roundtrip(records: &[Record], base: u64) -> Vec<StoredRecord> {
        let mut b = encode_batch(records, 77);
        b.set_base_offset(base);
        let hdr: [u8; HEADER_LEN] = b.bytes[..HEADER_LEN].try_into().unwrap();
        let h = parse_header(&hdr).unwrap();
        assert_eq!(h.total_len() as usize, b.bytes.len());
        verify_crc(&h, &b.bytes).unwrap();
        let mut out = Vec::new();
        decode_records(&h, &Bytes::from(b.bytes), 0, &mut out).unwrap();
        out
    }

    #[test]
    fn encodes_and_decodes() {
        let out = roundtrip(&[rec(5, Some("k"), "{}"), rec(3, None, "{\"a\":1}")], 10);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].offset, 10);
        assert_eq!(out[1].offset, 11);
        assert_eq!(out[1].timestamp, 3);
        assert_eq!(out[0].key.as_deref(), Some(&b"k"[..]));
        assert_eq!(out[1].key, None);
        assert_eq!(out[0].append_time, 77);
        assert_eq!(out[1].value, Bytes::from_static(b"{\"a\":1}"));
    }

    #[test]
    fn every_bit_flip_in_the_crc_range_is_detected() {
        let b = encode_batch(&[rec(1, Some("key"), "{\"v\":\"some value\"}")], 0);
        for i in CRC_START..b.bytes.len() {
            for bit in 0..8 {
                let mut bytes = b.bytes.clone();
                bytes[i] ^= 1 << bit;
                let hdr: [u8; HEADER_LEN] = bytes[..HEADER_LEN].try_into().unwrap();
                if let Ok(h) = parse_header(&hdr)
                    && h.total_len() as usize == bytes.len()
                {
                    assert!(verify_crc(&h, &bytes).is_err(), "flip at byte {i} bit {bit} went unnoticed");
                }
            }
        }
    }

    #[test]
    fn rejects_zeroed_length() {
        let mut b = encode_batch(&[rec(1, None, "{}")], 0);
        b.bytes[8..12].fill(0);
        let hdr: [u8; HEADER_LEN] = b.bytes[..HEADER_LEN].try_into().unwrap();
        assert_eq!(parse_header(&hdr), Err(FormatError::BadLength(0)));
    }

    proptest! {
        #[test]
        fn roundtrips_any_records(
            recs in prop::collection::vec(
                (any::<i32>(), prop::option::of(prop::collection::vec(any::<u8>(), 0..20)),
                 prop::collection::vec(any::<u8>(), 0..200)), 1..20),
            base in 0u64..u64::MAX / 2,
        ) {
            let records: Vec<Record> = recs.into_iter().map(|(ts, k, v)| Record {
                timestamp: ts as i64, key: k.map(Bytes::from), headers: vec![], value: Bytes::from(v),
            }).collect();
            let out = roundtrip(&records, base);
            prop_assert_eq!(out.len(), records.len());
            for (i, (a, b)) in records.iter().zip(&out).enumerate() {
                prop_assert_eq!(b.offset, base + i as u64);
                prop_assert_eq!(a.timestamp, b.timestamp);
                prop_assert_eq!(&a.key, &b.key);
                prop_assert_eq!(&a.value, &b.value);
            }
        }
    }
}
