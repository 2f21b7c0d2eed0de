//! Log output: one line per event, text (Postfix-like) or JSON lines.
//!
//! Log calls write Postfix-style text (`ID: to=<…> relay=… status=sent (…)`),
//! which is what admins grep. The JSON format carries the same line as
//! `message` and also splits it into fields (`queue_id`, `to`, `relay`,
//! `status`, `reply`, …), so a log pipeline gets structure without every
//! call site spelling each field twice.

use std::fmt;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use crate::config::LogFormat;

/// Installs the global subscriber. `RUST_LOG` overrides the level (default info).
pub fn init(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    // A second init (tests) keeps the first subscriber.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.event_format(JsonLines).try_init(),
    };
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
