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
}
