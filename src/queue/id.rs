//! Queue ids: 12 characters of Crockford base32, sortable by arrival.
//!
//! 42 bits of milliseconds since the epoch plus 18 random bits: unique in
//! practice (the database's primary key catches the rest) and short enough
//! to read over the phone, without look-alike letters (no I, L, O, U).

use std::time::{SystemTime, UNIX_EPOCH};

const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// A fresh queue id.
pub fn new_id() -> String {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let rnd: u64 = rand::random::<u64>() & 0x3_FFFF;
    let v = ((ms & ((1 << 42) - 1)) << 18) | rnd;
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
        let many: std::collections::HashSet<String> = (0..1000).map(|_| new_id()).collect();
        assert!(many.len() > 990);
    }
}
