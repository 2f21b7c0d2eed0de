//! Log output: one line per event, text (Postfix-like) or JSON lines.
//!
//! Log calls write Postfix-style text (`ID: to=<…> relay=… status=sent (…)`),
//! which is what admins grep. The JSON format carries the same line as
//! `message` and also splits it into fields (`queue_id`, `to`, `relay`,
//! `status`, `reply`, …), so a log pipeline gets structure without every
//! call site spelling each field twice.
//!
//! Log lines quote strangers (HELO names, addresses, remote replies). In
//! the text format every control character in them is escaped
//! (`crate::escape::line`: a CR or LF cannot forge a log line, an ESC
//! cannot drive the terminal of whoever tails the log); JSON strings are
//! escaped by serde.

use std::fmt;
use std::io::Write;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::{DefaultFields, Writer};
use tracing_subscriber::fmt::writer::{BoxMakeWriter, MakeWriter};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use crate::config::LogFormat;

/// Installs the global subscriber writing straight to stderr (CLI
/// commands). `RUST_LOG` overrides the level (default info).
pub fn init(format: LogFormat) {
    install(format, BoxMakeWriter::new(std::io::stderr));
}

/// Installs the daemon's subscriber: lines go to a buffer that a writer
/// thread hands to stderr in batches, so the hot path (three lines per
/// relayed message) does not cost a system call each. The writer wakes on
/// the first line, waits 5 ms for more, and writes them all at once: an
/// idle daemon's lines appear at once, a busy one's in a few hundred
/// writes a second. A `kill -9` can lose those 5 ms of log, never mail.
pub fn init_daemon(format: LogFormat) -> FlushGuard {
    let buf = Arc::new(Batch::default());
    install(format, BoxMakeWriter::new(BatchWriter(buf.clone())));
    let b = buf.clone();
    let _ = std::thread::Builder::new()
        .name("log-writer".into())
        .spawn(move || loop {
            b.wait_for_lines();
            std::thread::sleep(Duration::from_millis(5));
            b.flush_to_stderr();
        });
    FlushGuard(buf)
}

fn install(format: LogFormat, writer: BoxMakeWriter) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false);
    // A second init (tests) keeps the first subscriber.
    let _ = match format {
        LogFormat::Text => builder.fmt_fields(EscapedFields).try_init(),
        LogFormat::Json => builder.event_format(JsonLines).try_init(),
    };
}

/// Log lines waiting for the writer thread.
#[derive(Default)]
struct Batch(Mutex<Vec<u8>>, Condvar);

/// Largest batch kept in memory before a writer flushes it itself.
const MAX_BATCH: usize = 1 << 20;

impl Batch {
    fn wait_for_lines(&self) {
        if let Ok(g) = self.0.lock() {
            // The guard is released at once: the flush takes the lock again.
            drop(self.1.wait_while(g, |b| b.is_empty()));
        }
    }

    fn flush_to_stderr(&self) {
        let pending = match self.0.lock() {
            Ok(mut g) if !g.is_empty() => std::mem::take(&mut *g),
            _ => return,
        };
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(&pending);
        let _ = err.flush();
    }
}

#[derive(Clone)]
struct BatchWriter(Arc<Batch>);

impl Write for BatchWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let full = match self.0 .0.lock() {
            Ok(mut g) => {
                let was_empty = g.is_empty();
                g.extend_from_slice(data);
                if was_empty {
                    self.0 .1.notify_one();
                }
                g.len() >= MAX_BATCH
            }
            Err(_) => false,
        };
        if full {
            self.0.flush_to_stderr();
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for BatchWriter {
    type Writer = BatchWriter;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// Flushes the daemon's log buffer when dropped (at a clean exit).
pub struct FlushGuard(Arc<Batch>);

impl Drop for FlushGuard {
    fn drop(&mut self) {
        self.0.flush_to_stderr();
    }
}

/// The default text formatting of an event's fields (the message and any
/// `key=value`), then escaped so the line stays one line of plain text.
struct EscapedFields;

impl<'w> FormatFields<'w> for EscapedFields {
    fn format_fields<R: RecordFields>(&self, mut w: Writer<'w>, fields: R) -> fmt::Result {
        let mut s = String::new();
        DefaultFields::new().format_fields(Writer::new(&mut s), fields)?;
        w.write_str(&crate::escape::line(&s))
    }
}

/// One JSON object per event.
struct JsonLines;

#[derive(Default)]
struct Collect {
    message: String,
    fields: Map<String, Value>,
}

impl Visit for Collect {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_string();
        } else {
            self.fields.insert(field.name().into(), Value::from(value));
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            self.message = format!("{value:?}");
        } else {
            self.fields
                .insert(field.name().into(), Value::from(format!("{value:?}")));
        }
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.fields.insert(field.name().into(), Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.fields.insert(field.name().into(), Value::from(value));
    }
}

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut c = Collect::default();
        event.record(&mut c);
        let mut obj = Map::new();
        let now = time::OffsetDateTime::now_utc();
        obj.insert(
            "timestamp".into(),
            Value::from(
                now.format(&time::format_description::well_known::Rfc3339)
                    .unwrap_or_default(),
            ),
        );
        obj.insert(
            "level".into(),
            Value::from(event.metadata().level().as_str().to_ascii_lowercase()),
        );
        for (k, v) in split_fields(&c.message) {
            obj.insert(k, Value::from(v));
        }
        obj.extend(c.fields);
        obj.insert("message".into(), Value::from(c.message));
        writeln!(w, "{}", Value::Object(obj))
    }
}

/// Splits `ID: key=value key=value status=sent (reply)` into fields.
pub fn split_fields(msg: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = msg;
    if let Some((id, tail)) = msg.split_once(": ") {
        if id.len() == 12 && crate::queue::id::is_valid(id) {
            out.push(("queue_id".to_string(), id.to_string()));
            rest = tail;
        }
    }
    // Positions where a `key=` starts: at the beginning or after ' ' / ','.
    let b = rest.as_bytes();
    let mut starts = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if i == 0 || b[i - 1] == b' ' || b[i - 1] == b',' {
            let mut j = i;
            while j < b.len() && (b[j].is_ascii_lowercase() || b[j] == b'_') {
                j += 1;
            }
            if j > i && j < b.len() && b[j] == b'=' {
                starts.push((i, j));
                i = j + 1;
                continue;
            }
        }
        i += 1;
    }
    for (n, &(ks, ke)) in starts.iter().enumerate() {
        let end = starts.get(n + 1).map(|s| s.0).unwrap_or(b.len());
        let key = &rest[ks..ke];
        let mut val = rest[ke + 1..end].trim_end_matches([' ', ',']).to_string();
        if let Some((word, paren)) = val.split_once(" (") {
            if key == "status" && paren.ends_with(')') {
                let reply = paren[..paren.len() - 1].to_string();
                val = word.to_string();
                out.push((key.to_string(), val));
                out.push(("reply".to_string(), reply));
                continue;
            }
        }
        out.push((key.to_string(), val));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivery_line() {
        let f = split_fields("0PQ3Z8K1M2AB: to=<bob@example.jp>, relay=primary[127.0.0.1]:25, delay=0.12, dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as X)");
        let get = |k: &str| f.iter().find(|(a, _)| a == k).map(|(_, v)| v.as_str());
        assert_eq!(get("queue_id"), Some("0PQ3Z8K1M2AB"));
        assert_eq!(get("to"), Some("<bob@example.jp>"));
        assert_eq!(get("relay"), Some("primary[127.0.0.1]:25"));
        assert_eq!(get("dsn"), Some("2.0.0"));
        assert_eq!(get("status"), Some("sent"));
        assert_eq!(get("reply"), Some("250 2.0.0 Ok: queued as X"));
    }

    /// A subscriber like the daemon's text one, writing into a buffer.
    fn captured(f: impl FnOnce()) -> String {
        #[derive(Clone, Default)]
        struct Buf(Arc<Mutex<Vec<u8>>>);
        impl Write for Buf {
            fn write(&mut self, d: &[u8]) -> std::io::Result<usize> {
                if let Ok(mut g) = self.0.lock() {
                    g.extend_from_slice(d);
                }
                Ok(d.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let b2 = buf.clone();
        let sub = tracing_subscriber::fmt()
            .with_writer(move || b2.clone())
            .with_ansi(false)
            .with_target(false)
            .fmt_fields(EscapedFields)
            .finish();
        tracing::subscriber::with_default(sub, f);
        let out = buf.0.lock().map(|g| g.clone()).unwrap_or_default();
        String::from_utf8(out).unwrap()
    }

    /// Regression (issue 16): tracing-subscriber escapes ESC and BEL in a
    /// message but not CR or LF, so a remote reply could forge a log line.
    #[test]
    fn text_lines_escape_control_characters() {
        let reply = "451 4.3.0 later\rID: status=sent\n\x1b]0;x\x07";
        let out = captured(|| tracing::info!("ABC: to=<a@b>, status=deferred ({reply})"));
        assert_eq!(out.matches('\n').count(), 1, "{out:?}");
        assert!(out.ends_with('\n'));
        assert!(
            !out[..out.len() - 1].chars().any(|c| c.is_control()),
            "{out:?}"
        );
        assert!(
            out.contains("later\\x0dID: status=sent\\x0a\\x1b]0;x\\x07"),
            "{out:?}"
        );
        // Fields other than the message too (a `&str` field is Debug-quoted).
        let out = captured(|| tracing::info!(helo = %"a\rb", "x"));
        assert!(out.contains("helo=a\\x0db"), "{out:?}");
    }

    /// JSON escapes C0 controls (`\r`, `\n`, `\u001b`); C1 characters
    /// are valid JSON and stay as they are (a reader decodes them anyway).
    #[test]
    fn json_strings_are_escaped() {
        let v = Value::from("a\r\n\x1b\x07\x7fb");
        let s = v.to_string();
        assert!(!s.chars().any(|c| (c as u32) < 0x20), "{s:?}");
        assert_eq!(s, "\"a\\r\\n\\u001b\\u0007\x7fb\"");
    }

    #[test]
    fn accept_line() {
        let f = split_fields(
            "0PQ3Z8K1M2AB: from=<a@b.example> size=123 nrcpt=2 client=unknown[127.0.0.1]",
        );
        assert_eq!(f.len(), 5);
        assert_eq!(f[4], ("client".into(), "unknown[127.0.0.1]".into()));
        assert!(split_fields("listening on 127.0.0.1:25").is_empty());
    }
}
