//! A fixed 64-bit hash for sketches. Fixed forever: HyperLogLog registers persisted in checkpoints, and sketches
//! merged across tasks, are only meaningful if every process hashes a value to the same bits. (std's
//! `DefaultHasher` is explicitly allowed to change between Rust releases.)
//!
//! Construction: 8-byte little-endian words, each run through the SplitMix64/Murmur3 finalizer and folded into
//! the state with a multiply-rotate step (xxh64-style), the length folded in, then the finalizer again. Every
//! input bit reaches every output bit (checked by the avalanche test). Not for cryptographic or
//! adversarial-input use.

const P1: u64 = 0x9E37_79B1_85EB_CA87;
const P2: u64 = 0xC2B2_AE3D_27D4_EB4F;
const SEED: u64 = 0x27D4_EB2F_1656_67C5;

/// The SplitMix64 finalizer: a bijection on u64 with full avalanche.
#[inline]
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Hash of a byte string (e.g. the UTF-8 of a SQL string value).
pub fn hash64(bytes: &[u8]) -> u64 {
    let mut h = SEED ^ (bytes.len() as u64).wrapping_mul(P1);
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let word = u64::from_le_bytes(chunk.try_into().expect("chunks_exact yields 8 bytes"));
        h = (h ^ mix(word)).rotate_left(27).wrapping_mul(P1).wrapping_add(P2);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut buf = [0u8; 8];
        buf[..rest.len()].copy_from_slice(rest);
        // The length is already in the seed, so zero padding cannot collide with real zero bytes.
        h = (h ^ mix(u64::from_le_bytes(buf))).rotate_left(27).wrapping_mul(P1).wrapping_add(P2);
    }
    mix(h)
}

/// Hash of a 64-bit value (integers, `f64::to_bits` of floats). Equal to neither `hash64` of its bytes nor the
/// identity: it is a bijection, so distinct values never collide.
#[inline]
pub fn hash_u64(v: u64) -> u64 {
    mix(v.wrapping_add(P1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_values() {
        // Pinned: changing these breaks every persisted HyperLogLog.
        assert_eq!(hash64(b""), mix(SEED));
        assert_ne!(hash64(b"a"), hash64(b"a\0"));
        assert_ne!(hash64(b"abcdefgh"), hash64(b"abcdefgh\0"));
        assert_eq!(hash_u64(0), mix(P1));
    }

    #[test]
    fn avalanche() {
        // Flipping any input bit flips each output bit with probability ~1/2.
        let mut flips = [0u32; 64];
        let samples = 2000u64;
        for i in 0..samples {
            let input = hash_u64(i).to_le_bytes();
            let base = hash64(&input);
            let bit = (i % 64) as usize;
            let mut changed = input;
            changed[bit / 8] ^= 1 << (bit % 8);
            let diff = base ^ hash64(&changed);
            for (out, count) in flips.iter_mut().enumerate() {
                *count += ((diff >> out) & 1) as u32;
            }
        }
        for count in flips {
            let p = f64::from(count) / samples as f64;
            assert!((0.43..0.57).contains(&p), "bias {p}");
        }
    }
}
