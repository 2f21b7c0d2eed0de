//! `mx2.toml`: the daemon's configuration (SPEC §3).
//!
//! Every key is optional and has the developer default documented in SPEC §3,
//! so `mx2 serve` with no file runs a loopback relay. Unknown keys are errors
//! reported as `FILE:LINE: message`, because a misspelt key silently ignored
//! is how mail servers end up open relays.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Where the config file is looked for when `--config` / `MX2_CONFIG` are absent.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/mx2/mx2.toml";

/// The whole configuration, with every duration and size already parsed.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from; `None` when the embedded defaults apply.
    pub source: Option<PathBuf>,
    /// Problems that do not stop the daemon (`check-config` prints them,
    /// `serve` logs them at start).
    pub warnings: Vec<String>,
    /// Problems that stop `serve` (and fail `check-config`) but not the
    /// queue and table commands, as `FILE:LINE: message`.
    pub serve_errors: Vec<String>,
    pub hostname: String,
    pub smtp: Smtp,
    pub queue: Queue,
    pub relay: Relay,
    pub scan: Scan,
    pub log: Log,
    pub metrics: Metrics,
    pub control: Control,
}

#[derive(Debug, Clone)]
pub struct Smtp {
    pub listen: Vec<String>,
    pub max_message_size: u64,
    /// Most bytes of one header the header rules see (Postfix's
    /// `header_size_limit`); the message itself is not cut.
    pub header_size_limit: usize,
    /// Largest header block accepted (`552 5.3.4` past it).
    pub max_header_size: u64,
    /// Most header fields accepted (`552 5.3.4` past it).
    pub max_header_count: usize,
    pub max_recipients: usize,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    /// IPv6 clients in one prefix of this length count as one client
    /// for `max_connections_per_ip` and the ETRN rate (an IPv6 client
    /// usually holds a whole /64).
    pub ipv6_prefix: u8,
    pub command_timeout: Duration,
    /// Hard limit on one whole session, whatever the client does.
    pub session_timeout: Duration,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct Queue {
    pub path: PathBuf,
    pub min_backoff: Duration,
    pub max_backoff: Duration,
    pub max_lifetime: Duration,
    pub delay_warning: Option<Duration>,
}

/// How hard outbound TLS is insisted on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsPolicy {
    None,
    Opportunistic,
    Required,
    Verify,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecipientVerify {
    Off,
    Callout,
}

#[derive(Debug, Clone)]
pub struct Relay {
    pub transport_map: TablePath,
    pub header_checks: TablePath,
    pub relay_recipients: Option<PathBuf>,
    pub recipient_verify: RecipientVerify,
    pub tls: TlsPolicy,
    pub resolver: Option<String>,
    pub connect_timeout: Duration,
    /// Timeout for each SMTP command/reply exchange with a primary.
    pub command_timeout: Duration,
    pub destination_concurrency: usize,
    /// Callout answers "valid" are trusted this long.
    pub verify_positive_ttl: Duration,
    /// Callout answers "unknown" are trusted this long.
    pub verify_negative_ttl: Duration,
    /// What to do when a callout cannot get an answer.
    pub on_unverifiable: OnUnverifiable,
    /// Most callouts started per second (protects the primary).
    pub verify_rate: u32,
    /// Whole-callout time limit.
    pub verify_timeout: Duration,
    /// How long a stop waits for deliveries on the wire to finish.
    pub stop_timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnUnverifiable {
    Accept,
    Tempfail,
}

/// A lookup-table path, remembering whether the admin chose it.
///
/// A table missing at its *default* path means "not configured" (empty
/// table, a warning): a fresh checkout must run. A table missing at a path
/// the admin wrote is an error.
#[derive(Debug, Clone)]
pub struct TablePath {
    pub path: PathBuf,
    pub explicit: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnScannerError {
    Accept,
    Tempfail,
}

#[derive(Debug, Clone)]
pub struct Scan {
    pub spamd: Option<String>,
    pub clamd: Option<String>,
    pub milters: Vec<String>,
    pub on_scanner_error: OnScannerError,
    pub timeout: Duration,
    pub max_scan_size: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub struct Log {
    pub format: LogFormat,
}

#[derive(Debug, Clone)]
pub struct Metrics {
    pub listen: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Control {
    /// Unix socket for `queue flush`, reload and status.
    pub socket: PathBuf,
}

// ---- the file as written -------------------------------------------------

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    hostname: Option<String>,
    #[serde(default)]
    smtp: RawSmtp,
    #[serde(default)]
    queue: RawQueue,
    #[serde(default)]
    relay: RawRelay,
    #[serde(default)]
    scan: RawScan,
    #[serde(default)]
    log: RawLog,
    #[serde(default)]
    metrics: RawMetrics,
    #[serde(default)]
    control: RawControl,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSmtp {
    listen: Option<Vec<String>>,
    max_message_size: Option<String>,
    header_size_limit: Option<String>,
    max_header_size: Option<String>,
    max_header_count: Option<usize>,
    max_recipients: Option<usize>,
    max_connections: Option<usize>,
    max_connections_per_ip: Option<usize>,
    ipv6_prefix: Option<usize>,
    command_timeout: Option<String>,
    session_timeout: Option<String>,
    tls_cert: Option<String>,
    tls_key: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawQueue {
    path: Option<String>,
    min_backoff: Option<String>,
    max_backoff: Option<String>,
    max_lifetime: Option<String>,
    delay_warning: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRelay {
    transport_map: Option<String>,
    header_checks: Option<String>,
    relay_recipients: Option<String>,
    recipient_verify: Option<RecipientVerify>,
    tls: Option<TlsPolicy>,
    resolver: Option<String>,
    connect_timeout: Option<String>,
    command_timeout: Option<String>,
    destination_concurrency: Option<usize>,
    verify_positive_ttl: Option<String>,
    verify_negative_ttl: Option<String>,
    on_unverifiable: Option<OnUnverifiable>,
    verify_rate: Option<u32>,
    verify_timeout: Option<String>,
    stop_timeout: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawScan {
    spamd: Option<String>,
    clamd: Option<String>,
    milters: Option<Vec<String>>,
    on_scanner_error: Option<OnScannerError>,
    timeout: Option<String>,
    max_scan_size: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLog {
    format: Option<LogFormat>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    listen: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawControl {
    socket: Option<String>,
}

/// Every problem found in a config file, each as `FILE:LINE: message`.
#[derive(Debug)]
pub struct ConfigError {
    pub errors: Vec<String>,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.errors.join("\n"))
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// The embedded developer defaults (SPEC §3).
    pub fn defaults() -> Config {
        match Self::from_toml("", None) {
            Ok(c) => c,
            // The empty document cannot fail to parse; keep a sane fallback anyway.
            Err(e) => panic!("embedded defaults are invalid: {e}"),
        }
    }

    /// Loads `path`. A missing file at the *default* location gives the
    /// embedded defaults; a missing file the admin named is an error.
    pub fn load(path: &Path, explicit: bool) -> Result<Config, ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::from_toml(&text, Some(path)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => Ok(Self::defaults()),
            Err(e) => Err(ConfigError {
                errors: vec![format!("{}: cannot read: {e}", path.display())],
            }),
        }
    }

    /// Parses config text; `source` names the file in errors and anchors relative paths.
    pub fn from_toml(text: &str, source: Option<&Path>) -> Result<Config, ConfigError> {
        let name = source
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "<defaults>".into());
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError {
            errors: vec![toml_error(&name, text, &e)],
        })?;
        let mut errs = Errors {
            file: name,
            text,
            list: Vec::new(),
        };
        // Relative paths are relative to the config file's directory, like
        // every other daemon's config; with no file, to the working directory.
        let base = source
            .and_then(|p| p.parent())
            .filter(|p| !p.as_os_str().is_empty())
            .map(Path::to_path_buf);
        let resolve = |s: &str| -> PathBuf {
            let p = PathBuf::from(s);
            match (&base, p.is_absolute()) {
                (Some(b), false) => b.join(p),
                _ => p,
            }
        };

        let hostname = raw
            .hostname
            .filter(|h| !h.trim().is_empty())
            .unwrap_or_else(system_hostname);
        if !hostname
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
        {
            errs.push("hostname", format!("invalid hostname {hostname:?}"));
        }

        let s = raw.smtp;
        let listen = s
            .listen
            .unwrap_or_else(|| vec!["127.0.0.1:2525".to_string()]);
        for l in &listen {
            if l.parse::<std::net::SocketAddr>().is_err() {
                errs.push(
                    "listen",
                    format!("listen address {l:?} is not IP:PORT (IPv6 as [::1]:25)"),
                );
            }
        }
        if listen.is_empty() {
            errs.push("listen", "listen must name at least one address".into());
        }
        // A public MX greets and says EHLO with its fully qualified name;
        // a short name (a common /etc/hostname) gets mail refused by
        // primaries that check HELO, and breaks the loop check by name.
        let mut warnings = Vec::new();
        let mut serve_errors = Vec::new();
        if !hostname.contains('.') {
            let public = listen
                .iter()
                .filter_map(|l| l.parse::<std::net::SocketAddr>().ok())
                .any(|a| a.port() == 25);
            let what = format!(
                "hostname {hostname:?} is not a fully qualified domain name (no dot); set `hostname` to this MX's name"
            );
            if public {
                // Only for `serve` and `check-config`: the queue CLI does
                // not need the name and must keep working (as postqueue).
                serve_errors.push(errs.at(
                    "hostname",
                    &format!("{what} (required when listening on port 25)"),
                ));
            } else {
                warnings.push(what);
            }
        }
        let tls_cert = s.tls_cert.filter(|v| !v.is_empty()).map(|v| resolve(&v));
        let tls_key = s.tls_key.filter(|v| !v.is_empty()).map(|v| resolve(&v));
        if tls_cert.is_some() != tls_key.is_some() {
            errs.push(
                "tls_cert",
                "tls_cert and tls_key must be set together".into(),
            );
        }
        let smtp = Smtp {
            listen,
            max_message_size: errs.size(
                "max_message_size",
                s.max_message_size.as_deref(),
                50_000_000,
            ),
            header_size_limit: usize::try_from(errs.size_at_least_1(
                "header_size_limit",
                s.header_size_limit.as_deref(),
                102_400,
            ))
            .unwrap_or(usize::MAX),
            max_header_size: errs.size_at_least_1(
                "max_header_size",
                s.max_header_size.as_deref(),
                1_000_000,
            ),
            max_header_count: errs.positive("max_header_count", s.max_header_count, 10_000),
            max_recipients: errs.positive("max_recipients", s.max_recipients, 100),
            max_connections: errs.positive("max_connections", s.max_connections, 1000),
            max_connections_per_ip: errs.positive(
                "max_connections_per_ip",
                s.max_connections_per_ip,
                20,
            ),
            ipv6_prefix: match errs.positive("ipv6_prefix", s.ipv6_prefix, 64) {
                n @ 1..=128 => n as u8,
                _ => {
                    errs.push("ipv6_prefix", "ipv6_prefix must be 1 to 128".into());
                    64
                }
            },
            command_timeout: errs.duration("command_timeout", s.command_timeout.as_deref(), 300),
            session_timeout: errs.duration("session_timeout", s.session_timeout.as_deref(), 3600),
            tls_cert,
            tls_key,
        };

        let q = raw.queue;
        let queue = Queue {
            path: resolve(q.path.as_deref().unwrap_or("./mx2-data/queue.db")),
            min_backoff: errs.duration("min_backoff", q.min_backoff.as_deref(), 300),
            max_backoff: errs.duration("max_backoff", q.max_backoff.as_deref(), 4 * 3600),
            max_lifetime: errs.duration("max_lifetime", q.max_lifetime.as_deref(), 5 * 86400),
            delay_warning: match q.delay_warning.as_deref() {
                None | Some("") => None,
                Some(v) => Some(errs.duration("delay_warning", Some(v), 0)),
            },
        };
        if queue.min_backoff > queue.max_backoff {
            errs.push(
                "min_backoff",
                "min_backoff is larger than max_backoff".into(),
            );
        }

        let r = raw.relay;
        let table = |v: Option<String>, default: &str| match v {
            Some(p) if !p.is_empty() => TablePath {
                path: resolve(&p),
                explicit: true,
            },
            _ => TablePath {
                path: resolve(default),
                explicit: false,
            },
        };
        let relay = Relay {
            transport_map: table(r.transport_map, "./transport.map"),
            header_checks: table(r.header_checks, "./header_checks"),
            relay_recipients: r
                .relay_recipients
                .filter(|v| !v.is_empty())
                .map(|v| resolve(&v)),
            recipient_verify: r.recipient_verify.unwrap_or(RecipientVerify::Off),
            tls: r.tls.unwrap_or(TlsPolicy::Opportunistic),
            resolver: r.resolver.filter(|v| !v.is_empty()),
            connect_timeout: errs.duration("connect_timeout", r.connect_timeout.as_deref(), 30),
            command_timeout: errs.duration("command_timeout", r.command_timeout.as_deref(), 300),
            destination_concurrency: errs.positive(
                "destination_concurrency",
                r.destination_concurrency,
                20,
            ),
            verify_positive_ttl: errs.duration(
                "verify_positive_ttl",
                r.verify_positive_ttl.as_deref(),
                7 * 86400,
            ),
            verify_negative_ttl: errs.duration(
                "verify_negative_ttl",
                r.verify_negative_ttl.as_deref(),
                3600,
            ),
            on_unverifiable: r.on_unverifiable.unwrap_or(OnUnverifiable::Accept),
            verify_rate: errs.positive("verify_rate", r.verify_rate.map(|v| v as usize), 10) as u32,
            verify_timeout: errs.duration("verify_timeout", r.verify_timeout.as_deref(), 30),
            stop_timeout: errs.duration("stop_timeout", r.stop_timeout.as_deref(), 30),
        };
        if let Some(res) = &relay.resolver {
            if res.parse::<std::net::SocketAddr>().is_err() {
                errs.push("resolver", format!("resolver {res:?} is not IP:PORT"));
            }
        }

        let sc = raw.scan;
        let scan = Scan {
            spamd: sc.spamd.filter(|v| !v.is_empty()),
            clamd: sc.clamd.filter(|v| !v.is_empty()),
            milters: sc.milters.unwrap_or_default(),
            on_scanner_error: sc.on_scanner_error.unwrap_or(OnScannerError::Accept),
            timeout: errs.duration("timeout", sc.timeout.as_deref(), 60),
            max_scan_size: errs.size("max_scan_size", sc.max_scan_size.as_deref(), 10_000_000),
        };

        let metrics = Metrics {
            listen: raw.metrics.listen.filter(|v| !v.is_empty()),
        };
        if let Some(m) = &metrics.listen {
            if m.parse::<std::net::SocketAddr>().is_err() {
                errs.push("listen", format!("metrics listen {m:?} is not IP:PORT"));
            }
        }
        let control = Control {
            socket: match raw.control.socket.filter(|v| !v.is_empty()) {
                Some(p) => resolve(&p),
                None => queue
                    .path
                    .parent()
                    .map(|d| d.join("control.sock"))
                    .unwrap_or_else(|| PathBuf::from("control.sock")),
            },
        };

        if !errs.list.is_empty() {
            return Err(ConfigError { errors: errs.list });
        }
        Ok(Config {
            source: source.map(Path::to_path_buf),
            warnings,
            serve_errors,
            hostname,
            smtp,
            queue,
            relay,
            scan,
            log: Log {
                format: raw.log.format.unwrap_or(LogFormat::Text),
            },
            metrics,
            control,
        })
    }
}

/// Collects value errors with the line of the key they concern.
struct Errors<'a> {
    file: String,
    text: &'a str,
    list: Vec<String>,
}

impl Errors<'_> {
    fn push(&mut self, key: &str, msg: String) {
        let at = self.at(key, &msg);
        self.list.push(at);
    }

    /// `FILE:LINE: msg` for `key`.
    fn at(&self, key: &str, msg: &str) -> String {
        let line = key_line(self.text, key);
        format!("{}:{line}: {msg}", self.file)
    }

    fn duration(&mut self, key: &str, v: Option<&str>, default_secs: u64) -> Duration {
        match v {
            None => Duration::from_secs(default_secs),
            Some(s) => parse_duration(s).unwrap_or_else(|e| {
                self.push(key, format!("{key}: {e}"));
                Duration::from_secs(default_secs)
            }),
        }
    }

    fn size(&mut self, key: &str, v: Option<&str>, default: u64) -> u64 {
        match v {
            None => default,
            Some(s) => parse_size(s).unwrap_or_else(|e| {
                self.push(key, format!("{key}: {e}"));
                default
            }),
        }
    }

    /// A size that must not be 0 (a limit of nothing is a typo).
    fn size_at_least_1(&mut self, key: &str, v: Option<&str>, default: u64) -> u64 {
        match self.size(key, v, default) {
            0 => {
                self.push(key, format!("{key} must be at least 1 byte"));
                default
            }
            n => n,
        }
    }

    fn positive(&mut self, key: &str, v: Option<usize>, default: usize) -> usize {
        match v {
            None => default,
            Some(0) => {
                self.push(key, format!("{key} must be at least 1"));
                default
            }
            Some(n) => n,
        }
    }
}

/// The 1-based line where `key = …` is first written, or 1.
fn key_line(text: &str, key: &str) -> usize {
    text.lines()
        .position(|l| {
            let t = l.trim_start();
            t.strip_prefix(key)
                .map(|rest| rest.trim_start().starts_with('='))
                .unwrap_or(false)
        })
        .map(|i| i + 1)
        .unwrap_or(1)
}

fn toml_error(file: &str, text: &str, e: &toml::de::Error) -> String {
    let line = e
        .span()
        .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1)
        .unwrap_or(1);
    format!("{file}:{line}: {}", e.message())
}

/// `"30s"`, `"5m"`, `"4h"`, `"5d"`, `"1w"`; a bare number is seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(digits);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("bad duration {s:?} (use e.g. 30s, 5m, 4h, 5d)"))?;
    let mult = match unit.trim() {
        "" | "s" => 1,
        "ms" => return Ok(Duration::from_millis(n)),
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        "w" => 7 * 86400,
        _ => return Err(format!("bad duration {s:?} (use e.g. 30s, 5m, 4h, 5d)")),
    };
    n.checked_mul(mult)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("duration {s:?} is too large"))
}

/// `"50MB"` (10⁶ bytes), `"50MiB"` (2²⁰), `"10k"`, a bare number of bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(digits);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("bad size {s:?} (use e.g. 50MB or 50MiB)"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        _ => return Err(format!("bad size {s:?} (use e.g. 50MB or 50MiB)")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("size {s:?} is too large"))
}

fn system_hostname() -> String {
    let h = gethostname::gethostname().to_string_lossy().to_string();
    if h.is_empty() {
        "localhost".into()
    } else {
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_spec() {
        let c = Config::defaults();
        assert_eq!(c.smtp.listen, vec!["127.0.0.1:2525"]);
        assert_eq!(c.smtp.max_message_size, 50_000_000);
        assert_eq!(c.smtp.max_recipients, 100);
        assert_eq!(c.queue.min_backoff, Duration::from_secs(300));
        assert_eq!(c.queue.max_lifetime, Duration::from_secs(5 * 86400));
        assert_eq!(c.relay.tls, TlsPolicy::Opportunistic);
        assert_eq!(c.relay.destination_concurrency, 20);
        assert!(!c.relay.transport_map.explicit);
        assert_eq!(c.log.format, LogFormat::Text);
    }

    #[test]
    fn unknown_key_names_file_and_line() {
        let text = "hostname = \"mx2.example\"\n[smtp]\nlisten = [\"127.0.0.1:25\"]\nmax_mesage_size = \"1MB\"\n";
        let e = Config::from_toml(text, Some(Path::new("/etc/mx2/mx2.toml"))).unwrap_err();
        assert_eq!(e.errors.len(), 1);
        assert!(
            e.errors[0].starts_with("/etc/mx2/mx2.toml:4: "),
            "{}",
            e.errors[0]
        );
        assert!(e.errors[0].contains("max_mesage_size"), "{}", e.errors[0]);
    }

    #[test]
    fn a_short_hostname_is_an_error_on_port_25_and_a_warning_elsewhere() {
        let public = "hostname = \"vm\"\n[smtp]\nlisten = [\"0.0.0.0:25\"]\n";
        let c = Config::from_toml(public, Some(Path::new("m.toml"))).unwrap();
        assert_eq!(c.serve_errors.len(), 1, "{:?}", c.serve_errors);
        assert!(
            c.serve_errors[0].starts_with("m.toml:1: hostname \"vm\" is not a fully qualified"),
            "{:?}",
            c.serve_errors
        );
        let dev = "hostname = \"vm\"\n[smtp]\nlisten = [\"127.0.0.1:2525\"]\n";
        let c = Config::from_toml(dev, Some(Path::new("m.toml"))).unwrap();
        assert_eq!(c.warnings.len(), 1);
        let fqdn = "hostname = \"mx2.example.jp\"\n[smtp]\nlisten = [\"0.0.0.0:25\"]\n";
        assert!(Config::from_toml(fqdn, None).unwrap().warnings.is_empty());
    }

    #[test]
    fn bad_values_are_all_reported_with_lines() {
        let text = "[queue]\nmin_backoff = \"5 parsecs\"\n[smtp]\nmax_message_size = \"lots\"\nlisten = [\"nowhere\"]\n";
        let e = Config::from_toml(text, Some(Path::new("c.toml"))).unwrap_err();
        let all = e.errors.join("\n");
        assert!(all.contains("c.toml:2: min_backoff"), "{all}");
        assert!(all.contains("c.toml:4: max_message_size"), "{all}");
        assert!(all.contains("c.toml:5: listen"), "{all}");
    }

    #[test]
    fn durations_and_sizes() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("4h").unwrap(), Duration::from_secs(14400));
        assert_eq!(parse_duration("5d").unwrap(), Duration::from_secs(432000));
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("").is_err());
        assert_eq!(parse_size("50MB").unwrap(), 50_000_000);
        assert_eq!(parse_size("50MiB").unwrap(), 50 << 20);
        assert_eq!(parse_size("1024").unwrap(), 1024);
        assert!(parse_size("5 potatoes").is_err());
    }

    #[test]
    fn relative_paths_follow_the_config_file() {
        let c = Config::from_toml(
            "[relay]\ntransport_map = \"transport\"\n",
            Some(Path::new("/etc/mx2/mx2.toml")),
        )
        .unwrap();
        assert_eq!(
            c.relay.transport_map.path,
            PathBuf::from("/etc/mx2/transport")
        );
        assert!(c.relay.transport_map.explicit);
    }
}
