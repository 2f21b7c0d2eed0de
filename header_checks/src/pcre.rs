//! A thin, safe wrapper over the PCRE2 C library (via `pcre2-sys`).
//!
//! Why not the `pcre2` crate: it takes patterns as `&str` (a rules file may
//! hold 8-bit bytes), and it has no setters for `PCRE2_ANCHORED`,
//! `PCRE2_DOLLAR_ENDONLY` or `PCRE2_UNGREEDY`, which pcre_table(5)'s `A`, `E`
//! and `U` flags toggle. Going to the C API gives exactly Postfix's compile
//! options, a per-match limit without rewriting the pattern, and JIT.

use std::ffi::{c_int, c_void};
use std::ptr::NonNull;

use pcre2_sys as ffi;

/// Caseless matching (`i`).
pub(crate) const CASELESS: u32 = ffi::PCRE2_CASELESS;
/// `^`/`$` also match at internal newlines (`m`).
pub(crate) const MULTILINE: u32 = ffi::PCRE2_MULTILINE;
/// `.` matches newline (`s`).
pub(crate) const DOTALL: u32 = ffi::PCRE2_DOTALL;
/// Whitespace and `#` comments in the pattern are ignored (`x`).
pub(crate) const EXTENDED: u32 = ffi::PCRE2_EXTENDED;
/// Match only at the start of the subject (`A`).
pub(crate) const ANCHORED: u32 = ffi::PCRE2_ANCHORED;
/// `$` matches only at the very end (`E`).
pub(crate) const DOLLAR_ENDONLY: u32 = ffi::PCRE2_DOLLAR_ENDONLY;
/// Quantifiers are lazy by default (`U`).
pub(crate) const UNGREEDY: u32 = ffi::PCRE2_UNGREEDY;

/// Backtracking budget per match attempt. A runaway pattern fails with a
/// "match limit exceeded" error (counted as "no match") instead of pinning a
/// core. Generous for real headers: `.*` over a 100 KB header costs ~100k.
pub(crate) const MATCH_LIMIT: u32 = 1_000_000;

/// Heap budget (KiB) for the interpreter's backtracking frames.
const HEAP_LIMIT_KIB: u32 = 64 * 1024;

/// A compiled pattern. Immutable after construction, so it can be shared
/// between threads (PCRE2 explicitly supports concurrent matching with one
/// compiled pattern, JIT code included).
pub(crate) struct Regex {
    code: NonNull<ffi::pcre2_code_8>,
    captures: u32,
}

// SAFETY: a pcre2_code is never mutated after pcre2_compile/pcre2_jit_compile
// (both done in `Regex::new`), and PCRE2 documents that compiled patterns may
// be used by several threads at once.
unsafe impl Send for Regex {}
// SAFETY: see above; `&Regex` only ever reads the compiled code.
unsafe impl Sync for Regex {}

impl Drop for Regex {
    fn drop(&mut self) {
        // SAFETY: `code` came from pcre2_compile and is freed exactly once.
        unsafe { ffi::pcre2_code_free_8(self.code.as_ptr()) }
    }
}

impl std::fmt::Debug for Regex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Regex")
            .field("captures", &self.captures)
            .finish()
    }
}

/// PCRE2's text for an error code.
pub(crate) fn error_message(code: c_int) -> String {
    let mut buf = [0u8; 256];
    // SAFETY: buf is writable for buf.len() bytes; PCRE2 NUL-terminates and
    // returns the length (or a negative error).
    let n = unsafe { ffi::pcre2_get_error_message_8(code, buf.as_mut_ptr(), buf.len()) };
    if n > 0 {
        let n = (n as usize).min(buf.len());
        String::from_utf8_lossy(&buf[..n]).into_owned()
    } else {
        format!("unexpected pcre2 error code {code}")
    }
}

impl Regex {
    /// Compiles `pattern` (raw bytes, no UTF mode) with `options`, then tries
    /// to JIT-compile it (falls back to the interpreter silently). The error
    /// reads like Postfix's: "error in regex at offset N: MESSAGE".
    pub(crate) fn new(pattern: &[u8], options: u32) -> Result<Regex, String> {
        let mut err: c_int = 0;
        let mut off: usize = 0;
        // SAFETY: pattern is valid for pattern.len() bytes; err/off are
        // valid out-pointers; a null compile context means defaults.
        let code = unsafe {
            ffi::pcre2_compile_8(
                pattern.as_ptr(),
                pattern.len(),
                options,
                &mut err,
                &mut off,
                std::ptr::null_mut(),
            )
        };
        let Some(code) = NonNull::new(code) else {
            return Err(format!(
                "error in regex at offset {off}: {}",
                error_message(err)
            ));
        };
        let mut captures: u32 = 0;
        // SAFETY: code is a valid compiled pattern; CAPTURECOUNT writes a u32.
        let rc = unsafe {
            ffi::pcre2_pattern_info_8(
                code.as_ptr(),
                ffi::PCRE2_INFO_CAPTURECOUNT,
                (&mut captures as *mut u32).cast::<c_void>(),
            )
        };
        if rc != 0 {
            captures = 0;
        }
        // SAFETY: code is valid and not yet shared. A failure (no JIT
        // support, out of executable memory) leaves the pattern usable by
        // the interpreter.
        unsafe {
            ffi::pcre2_jit_compile_8(code.as_ptr(), ffi::PCRE2_JIT_COMPLETE);
        }
        Ok(Regex { code, captures })
    }

    /// Number of capturing groups in the pattern.
    pub(crate) fn captures(&self) -> u32 {
        self.captures
    }
}

/// Per-call scratch space for matching: match data sized for the largest
/// pattern, and a match context carrying the limits. Not shared between
/// threads; create one per `apply`.
pub(crate) struct Matcher {
    data: NonNull<ffi::pcre2_match_data_8>,
    ctx: NonNull<ffi::pcre2_match_context_8>,
    pairs: u32,
    /// Subject length of the last successful match (bounds ovector reads).
    subject_len: usize,
}

impl Drop for Matcher {
    fn drop(&mut self) {
        // SAFETY: both were created in `Matcher::new` and are freed once.
        unsafe {
            ffi::pcre2_match_data_free_8(self.data.as_ptr());
            ffi::pcre2_match_context_free_8(self.ctx.as_ptr());
        }
    }
}

/// What one match attempt found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MatchResult {
    Match,
    NoMatch,
    /// PCRE2 error code (match limit, JIT stack, bad UTF with (*UTF), ...).
    Error(c_int),
}

impl Matcher {
    /// Scratch space able to hold `max_captures` groups, with the usual
    /// [`MATCH_LIMIT`]. `None` only when the C allocator fails.
    #[cfg(test)]
    pub(crate) fn new(max_captures: u32) -> Option<Matcher> {
        Matcher::with_match_limit(max_captures, MATCH_LIMIT)
    }

    /// Scratch space able to hold `max_captures` groups, with this match
    /// limit (`None` only when the C allocator fails). A lower limit only
    /// turns some results into errors: a result that is not an error is
    /// the same under any limit.
    pub(crate) fn with_match_limit(max_captures: u32, match_limit: u32) -> Option<Matcher> {
        let pairs = max_captures.saturating_add(1);
        // SAFETY: null general context = malloc/free.
        let data =
            NonNull::new(unsafe { ffi::pcre2_match_data_create_8(pairs, std::ptr::null_mut()) })?;
        // SAFETY: as above.
        let ctx = match NonNull::new(unsafe {
            ffi::pcre2_match_context_create_8(std::ptr::null_mut())
        }) {
            Some(c) => c,
            None => {
                // SAFETY: data was just created and is not used afterwards.
                unsafe { ffi::pcre2_match_data_free_8(data.as_ptr()) };
                return None;
            }
        };
        // SAFETY: ctx is a valid, exclusively owned match context.
        unsafe {
            ffi::pcre2_set_match_limit_8(ctx.as_ptr(), match_limit);
            ffi::pcre2_set_heap_limit_8(ctx.as_ptr(), HEAP_LIMIT_KIB);
        }
        Some(Matcher {
            data,
            ctx,
            pairs,
            subject_len: 0,
        })
    }

    /// Runs `re` over `subject` from offset 0. On a JIT stack overflow the
    /// attempt is repeated with the interpreter (heap-backed), so JIT never
    /// changes a result.
    pub(crate) fn exec(&mut self, re: &Regex, subject: &[u8]) -> MatchResult {
        let mut rc = self.raw_exec(re, subject, 0);
        if rc == ffi::PCRE2_ERROR_JIT_STACKLIMIT {
            rc = self.raw_exec(re, subject, ffi::PCRE2_NO_JIT);
        }
        if rc >= 0 {
            // rc == 0 would mean "ovector too small": cannot happen, the
            // match data is sized for the largest pattern; still a match.
            self.subject_len = subject.len();
            MatchResult::Match
        } else if rc == ffi::PCRE2_ERROR_NOMATCH {
            MatchResult::NoMatch
        } else {
            MatchResult::Error(rc)
        }
    }

    fn raw_exec(&mut self, re: &Regex, subject: &[u8], options: u32) -> c_int {
        // An empty slice's pointer is dangling but non-null; PCRE2 reads no
        // byte of a zero-length subject.
        // SAFETY: code/data/ctx are valid; subject is readable for its length;
        // data was sized for `pairs` >= re.captures + 1 (see Rules), but even
        // a smaller ovector is handled by PCRE2 (rc == 0).
        unsafe {
            ffi::pcre2_match_8(
                re.code.as_ptr(),
                subject.as_ptr(),
                subject.len(),
                0,
                options,
                self.data.as_ptr(),
                self.ctx.as_ptr(),
            )
        }
    }

    /// Byte range of capture group `n` after a successful `exec`, or `None`
    /// when the group did not take part (or `n` is out of range).
    pub(crate) fn group(&self, n: usize) -> Option<(usize, usize)> {
        if n >= self.pairs as usize {
            return None;
        }
        // SAFETY: data is valid; the ovector has `pairs` pairs.
        let ov = unsafe {
            let p = ffi::pcre2_get_ovector_pointer_8(self.data.as_ptr());
            std::slice::from_raw_parts(p, self.pairs as usize * 2)
        };
        let (s, e) = (ov[2 * n], ov[2 * n + 1]);
        if s == ffi::PCRE2_UNSET || e == ffi::PCRE2_UNSET || s > e || e > self.subject_len {
            return None;
        }
        Some((s, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compile_error_reads_like_postfix() {
        let e = Regex::new(b"c(", 0).unwrap_err();
        assert_eq!(e, "error in regex at offset 2: missing closing parenthesis");
    }

    #[test]
    fn match_and_groups() {
        let re = Regex::new(b"^Subject: (.*)", CASELESS | DOTALL).unwrap();
        assert_eq!(re.captures(), 1);
        let mut m = Matcher::new(1).unwrap();
        assert_eq!(m.exec(&re, b"subject: hi\n there"), MatchResult::Match);
        assert_eq!(m.group(1), Some((9, 18)));
        assert_eq!(m.exec(&re, b"From: x"), MatchResult::NoMatch);
    }

    #[test]
    fn anchored_and_dollar_endonly() {
        let re = Regex::new(b"b", ANCHORED).unwrap();
        let mut m = Matcher::new(0).unwrap();
        assert_eq!(m.exec(&re, b"ab"), MatchResult::NoMatch);
        assert_eq!(m.exec(&re, b"ba"), MatchResult::Match);
        let re = Regex::new(b"a$", DOLLAR_ENDONLY).unwrap();
        assert_eq!(m.exec(&re, b"a\n"), MatchResult::NoMatch);
        let re = Regex::new(b"a$", 0).unwrap();
        assert_eq!(m.exec(&re, b"a\n"), MatchResult::Match);
    }

    #[test]
    fn runaway_pattern_hits_the_limit() {
        let re = Regex::new(b"^(a+)+$", 0).unwrap();
        let mut m = Matcher::new(1).unwrap();
        let mut s = vec![b'a'; 40];
        s.push(b'!');
        match m.exec(&re, &s) {
            MatchResult::Error(code) => assert!(error_message(code).contains("limit")),
            other => panic!("expected a limit error, got {other:?}"),
        }
    }

    #[test]
    fn eight_bit_bytes_match_without_utf() {
        let re = Regex::new(b"caf\xe9", CASELESS).unwrap();
        let mut m = Matcher::new(0).unwrap();
        assert_eq!(m.exec(&re, b"Subject: CAF\xe9"), MatchResult::Match);
    }
}
