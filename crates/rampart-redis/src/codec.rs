//! A stored entry as bytes: a small binary header, then the value as is.
//!
//! ```text
//! u8  version (1)
//! u8  flags: bit 0 = has a value (else "the key does not exist")
//! 5 × varint  loaded_at_ms, fresh (ms after loaded_at), grace (ms after
//!             loaded_at), error (ms after loaded_at), load_micros
//! ..  value bytes (rows are JSON already; re-encoding them would only cost)
//! ```
//! Deadlines are offsets from `loaded_at`, so a typical header is ~14
//! bytes instead of 42 for five fixed `u64`s.

use bytes::{BufMut, Bytes, BytesMut};
use rampart::cache::Stored;

const VERSION: u8 = 1;
const HAS_VALUE: u8 = 1;

fn put_varint(out: &mut BytesMut, mut n: u64) {
    while n >= 0x80 {
        out.put_u8((n as u8 & 0x7f) | 0x80);
        n >>= 7;
    }
    out.put_u8(n as u8);
}

fn get_varint(input: &[u8], at: &mut usize) -> Option<u64> {
    let mut n = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *input.get(*at)?;
        *at += 1;
        n |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(n);
        }
    }
    None
}

/// Encodes an entry.
pub fn encode(stored: &Stored<Bytes>) -> Bytes {
    let value_len = stored.value.as_ref().map_or(0, Bytes::len);
    let mut out = BytesMut::with_capacity(2 + 5 * 5 + value_len);
    out.put_u8(VERSION);
    out.put_u8(if stored.value.is_some() { HAS_VALUE } else { 0 });
    let base = stored.loaded_at_ms;
    put_varint(&mut out, base);
    put_varint(&mut out, stored.fresh_until_ms.saturating_sub(base));
    put_varint(&mut out, stored.grace_until_ms.saturating_sub(base));
    put_varint(&mut out, stored.error_until_ms.saturating_sub(base));
    put_varint(&mut out, stored.load_micros);
    if let Some(value) = &stored.value {
        out.put_slice(value);
    }
    out.freeze()
}

/// Decodes an entry; `None` for bytes this version does not understand
/// (treated as a miss, never a crash).
pub fn decode(input: &[u8]) -> Option<Stored<Bytes>> {
    if input.first() != Some(&VERSION) {
        return None;
    }
    let flags = *input.get(1)?;
    let mut at = 2;
    let base = get_varint(input, &mut at)?;
    let fresh = get_varint(input, &mut at)?;
    let grace = get_varint(input, &mut at)?;
    let error = get_varint(input, &mut at)?;
    let load_micros = get_varint(input, &mut at)?;
    let value = (flags & HAS_VALUE != 0).then(|| Bytes::copy_from_slice(&input[at..]));
    Some(Stored {
        value,
        loaded_at_ms: base,
        fresh_until_ms: base.saturating_add(fresh),
        grace_until_ms: base.saturating_add(grace),
        error_until_ms: base.saturating_add(error),
        load_micros,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(value: Option<&str>) -> Stored<Bytes> {
        Stored {
            value: value.map(|v| Bytes::copy_from_slice(v.as_bytes())),
            loaded_at_ms: 1_764_000_000_123,
            fresh_until_ms: 1_764_000_060_123,
            grace_until_ms: 1_764_000_070_123,
            error_until_ms: 1_764_000_360_123,
            load_micros: 1_234,
        }
    }

    #[test]
    fn round_trips_values_and_absence() {
        for s in [stored(Some("{\"id\":1}")), stored(None), stored(Some(""))] {
            assert_eq!(decode(&encode(&s)), Some(s));
        }
    }

    #[test]
    fn the_header_is_small() {
        let encoded = encode(&stored(Some("")));
        assert!(encoded.len() <= 20, "{} header bytes", encoded.len());
    }

    #[test]
    fn garbage_is_a_miss_not_a_panic() {
        for bad in [
            &b""[..],
            b"\x02abc",
            b"\x01",
            b"\x01\x01\xff\xff\xff",
            b"\x01\x01\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff",
        ] {
            assert_eq!(decode(bad), None, "{bad:?}");
        }
    }
}
