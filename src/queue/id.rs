//! Queue ids: 12 characters of Crockford base32, sortable by arrival.
//!
//! The id is a 60-bit number: milliseconds since the epoch shifted left by
//! 18 bits, made strictly increasing within the process (a burst of
//! messages in one millisecond takes the following numbers). So ids never
//! collide — the `Received:` header names the id before the message is
//! stored, so a retry with another id is not an option — and they read
//! aloud without look-alike letters (no I, L, O, U).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// The last number handed out.
static LAST: AtomicU64 = AtomicU64::new(0);

/// A fresh queue id.
pub fn new_id() -> String {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let floor = (ms & ((1 << 42) - 1)) << 18;
    let mut prev = LAST.load(Ordering::Relaxed);
    let v = loop {
        let next = floor.max(prev + 1);
        match LAST.compare_exchange_weak(prev, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => break next,
            Err(p) => prev = p,
        }
    };
    (0..12)
        .rev()
        .map(|i| ALPHABET[((v >> (i * 5)) & 31) as usize] as char)
        .collect()
}

/// Makes every id handed out from now on sort after `id` (an id already in
/// the queue). The daemon calls this at start with the highest queued id:
/// the number comes from the clock, and a clock stepped back across a
/// restart would otherwise hand out an id that is still queued (the
/// insert, or a DSN's insert, would then fail).
pub fn raise_floor(id: &str) {
    if let Some(v) = decode(id) {
        LAST.fetch_max(v, Ordering::Relaxed);
    }
}

/// The number behind a queue id, if it is one.
fn decode(id: &str) -> Option<u64> {
    if !is_valid(id) {
        return None;
    }
    id.bytes().try_fold(0u64, |acc, b| {
        let d = ALPHABET.iter().position(|&a| a == b)? as u64;
        Some((acc << 5) | d)
    })
}

/// True when `s` looks like a queue id (used to validate CLI arguments).
pub fn is_valid(s: &str) -> bool {
    s.len() == 12 && s.bytes().all(|b| ALPHABET.contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_valid_unique_and_sorted_by_time() {
        let a = new_id();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = new_id();
        assert!(is_valid(&a) && is_valid(&b));
        assert!(a < b, "{a} !< {b}");
        let many: Vec<String> = (0..100_000).map(|_| new_id()).collect();
        assert!(many.windows(2).all(|w| w[0] < w[1]), "strictly increasing");
    }

    #[test]
    fn ids_after_a_raised_floor_sort_after_it() {
        let a = new_id();
        assert_eq!(decode(&a).map(|_| ()), Some(()));
        // An id from the future (as if the clock had gone back since).
        let future = "Y00000000000";
        raise_floor(future);
        let b = new_id();
        assert!(b.as_str() > future, "{b} !> {future}");
        raise_floor("not an id");
        assert!(new_id() > b);
    }
}
