//! A private Exim 4.96 (Debian's exim4-daemon-light, unpacked by
//! scripts/interop-setup.sh because it conflicts with postfix) run with its
//! own config: `exim4 -C FILE -bdf -oX PORT -oP PIDFILE`, spool, logs and
//! pid under a fresh temp dir, `exim_path` pointing at the unpacked binary
//! (Exim re-executes itself for deliveries). With a non-default `-C` file
//! Exim drops root for deliveries ("exim user lost privilege"), so
//! deliveries run as Debian-exim and Maildirs belong to that user. No DNS:
//! `host_lookup =` empty, literal next hops only. The daemon runs in the
//! foreground in its own process group, killed on drop.
//!
//! Roles:
//! - `Primary { dsn, smtputf8 }`: local delivery for `example.jp` and `sender.example` into
//!   Maildirs `mail/<user>` (bob, carol, しげる → shigeru, alice); unknown
//!   users are accepted at RCPT and bounced at routing ("Unrouteable
//!   address"), so DSN NOTIFY decides whether the sender hears of it. The
//!   transport adds no Return-Path/Envelope-to/Delivery-date, so only
//!   Exim's Received: is added.
//! - `Sender { relay_port, require_tls }`: everything goes by a
//!   `manualroute` router to 127.0.0.1 port `relay_port` (mx2);
//!   `hosts_require_tls = *` when asked. Mail is submitted locally with
//!   `exim -odf` (`submit`) or through its daemon (relay for 127.0.0.1).

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use super::{mkdir, read_lossy, run_timeout, wait_until, Cert, Group};

pub enum Role {
    /// `dsn`/`smtputf8`: advertise DSN / SMTPUTF8 (dsn_advertise_hosts,
    /// smtputf8_advertise_hosts = * or empty).
    Primary {
        dsn: bool,
        smtputf8: bool,
    },
    Sender {
        relay_port: u16,
        require_tls: bool,
    },
}

pub struct Exim {
    pub dir: tempfile::TempDir,
    pub conf: PathBuf,
    pub port: u16,
    pub hostname: String,
    daemon: Option<Group>,
}

pub fn binary() -> PathBuf {
    let b = super::root().join("exim-root/usr/sbin/exim4");
    super::require(&b, "exim4 (unpacked exim4-daemon-light)");
    b
}

impl Exim {
    /// `tls`: the daemon offers STARTTLS with this certificate.
    pub fn start(role: Role, tls: Option<&Cert>) -> Exim {
        let bin = binary();
        let dir = super::peer_dir("exim");
        let d = dir.path().to_path_buf();
        let port = crate::common::free_port();
        for sub in ["spool", "log", "mail"] {
            mkdir(&d.join(sub), 0o750, Some("Debian-exim:Debian-exim"));
        }
        let (hostname, local_domains, dsn, smtputf8) = match role {
            Role::Primary { dsn, smtputf8 } => (
                "exim-primary.test",
                "example.jp : sender.example",
                dsn,
                smtputf8,
            ),
            Role::Sender { .. } => ("exim-sender.test", "", true, true),
        };
        let all = |on: bool| if on { "*" } else { "" };
        let tls_cf = match tls {
            Some(c) => format!(
                "tls_advertise_hosts = *\ntls_certificate = {}\ntls_privatekey = {}\n",
                c.cert.display(),
                c.key.display()
            ),
            None => "tls_advertise_hosts =\n".to_string(),
        };
        let (acl_relay, routers, transports) = match role {
            Role::Primary { .. } => {
                std::fs::write(
                    d.join("users"),
                    "bob: bob\ncarol: carol\nしげる: shigeru\nalice: alice\n",
                )
                .unwrap();
                (
                    String::new(),
                    format!(
                        "local_user:\n  driver = accept\n  domains = +local_domains\n  \
                         local_parts = lsearch;{d}/users\n  transport = maildir\n",
                        d = d.display()
                    ),
                    format!(
                        "maildir:\n  driver = appendfile\n  directory = {d}/mail/${{local_part_data}}\n  \
                         maildir_format\n  create_directory\n  user = Debian-exim\n  group = Debian-exim\n  \
                         mode = 0644\n  envelope_to_add = false\n  return_path_add = false\n  \
                         delivery_date_add = false\n",
                        d = d.display()
                    ),
                )
            }
            Role::Sender {
                relay_port,
                require_tls,
            } => (
                "  accept hosts = 127.0.0.1\n".to_string(),
                "to_mx2:\n  driver = manualroute\n  domains = ! +local_domains\n  \
                 route_list = * 127.0.0.1\n  self = send\n  transport = to_mx2\n"
                    .to_string(),
                format!(
                    "to_mx2:\n  driver = smtp\n  port = {relay_port}\n  allow_localhost\n  \
                     helo_data = {hostname}\n{}",
                    if require_tls {
                        "  hosts_require_tls = *\n"
                    } else {
                        "  hosts_avoid_tls = *\n"
                    }
                ),
            ),
        };
        let conf = d.join("exim.conf");
        let cf = format!(
            "# generated by tests/interop/exim.rs\n\
             exim_path = {bin}\n\
             primary_hostname = {hostname}\n\
             qualify_domain = {hostname}\n\
             spool_directory = {d}/spool\n\
             log_file_path = {d}/log/%slog\n\
             pid_file_path = {d}/exim.pid\n\
             keep_environment =\n\
             local_interfaces = <; 127.0.0.1\n\
             daemon_smtp_ports = {port}\n\
             exim_user = Debian-exim\n\
             exim_group = Debian-exim\n\
             host_lookup =\n\
             rfc1413_hosts =\n\
             dsn_advertise_hosts = {dsn}\n\
             smtputf8_advertise_hosts = {smtputf8}\n\
             accept_8bitmime = true\n\
             {tls_cf}\
             log_selector = +smtp_protocol_error +smtp_syntax_error +received_recipients +delivery_size +outgoing_port\n\
             domainlist local_domains = {local_domains}\n\
             acl_smtp_rcpt = acl_rcpt\n\
             \n\
             begin acl\n\
             acl_rcpt:\n  accept domains = +local_domains\n{acl_relay}  deny message = relay not permitted\n\
             \n\
             begin routers\n\
             {routers}\n\
             begin transports\n\
             {transports}\n\
             begin retry\n\
             * * F,2m,2s\n",
            bin = bin.display(),
            d = d.display(),
            dsn = all(dsn),
            smtputf8 = all(smtputf8),
        );
        std::fs::write(&conf, cf).unwrap();
        let mut ex = Exim {
            dir,
            conf,
            port,
            hostname: hostname.to_string(),
            daemon: None,
        };
        let log = std::fs::File::create(d.join("daemon.out")).unwrap();
        let mut g = Group::spawn(
            Command::new(&bin)
                .arg("-C")
                .arg(&ex.conf)
                .args(["-bdf", "-oX"])
                .arg(port.to_string())
                .arg("-oP")
                .arg(d.join("exim.pid"))
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log),
        );
        let up = super::wait_port(port, 20) && g.running();
        ex.daemon = Some(g);
        assert!(
            up,
            "exim did not start on port {port}:\n{}\n{}\n{}",
            read_lossy(&d.join("daemon.out")),
            ex.mainlog(),
            read_lossy(&d.join("log/paniclog"))
        );
        ex
    }

    pub fn mainlog(&self) -> String {
        read_lossy(&self.dir.path().join("log/mainlog"))
    }

    pub fn logs(&self) -> String {
        format!(
            "mainlog:\n{}\npaniclog:\n{}\ndaemon:\n{}",
            self.mainlog(),
            read_lossy(&self.dir.path().join("log/paniclog")),
            read_lossy(&self.dir.path().join("daemon.out"))
        )
    }

    pub fn wait_log(&self, needle: &str, secs: u64) -> bool {
        wait_until(secs, || self.mainlog().contains(needle))
    }

    pub fn maildir(&self, mailbox: &str) -> PathBuf {
        self.dir.path().join("mail").join(mailbox)
    }

    /// Local submission with foreground delivery:
    /// `exim -C FILE -odf -oi -f FROM ARGS -- RCPT...`.
    pub fn submit(&self, from: &str, args: &[&str], rcpts: &[&str], msg: &[u8]) -> Output {
        run_timeout(
            Command::new(binary())
                .arg("-C")
                .arg(&self.conf)
                .args(["-odf", "-oi", "-f", from])
                .args(args)
                .arg("--")
                .args(rcpts),
            msg,
            60,
        )
    }
}
