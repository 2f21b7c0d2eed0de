//! Abusive clients against `mx2 serve`: a thousand idle connections,
//! slowloris (in commands and in DATA), overlong lines, command floods,
//! pipelining abuse (the body before the 354, a burst of hundreds of
//! transactions in one write, a flood that never reads its replies), early
//! talkers and clients that vanish in the middle of DATA. Limits answer
//! with their codes, memory stays bounded (VmRSS/VmHWM of the daemon from
//! /proc), and a legitimate client's mail is accepted and relayed while the
//! abuse goes on.
//!
//! Abusers connect from 127.0.0.2 and up (all of 127/8 is loopback), so the
//! per-address limit applies to them and not to the legitimate client on
//! 127.0.0.1.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::sink::Sink;
use common::{wait_for, Client, Daemon};

/// A TCP connection to mx2 from source address `from`.
fn connect_from(from: Ipv4Addr, port: u16) -> std::io::Result<TcpStream> {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    s.bind(&SocketAddr::new(IpAddr::V4(from), 0).into())?;
    s.connect(&SocketAddr::from(([127, 0, 0, 1], port)).into())?;
    let t: TcpStream = s.into();
    t.set_read_timeout(Some(Duration::from_secs(20)))?;
    Ok(t)
}

fn read_line(r: &mut impl BufRead) -> String {
    let mut l = String::new();
    match r.read_line(&mut l) {
        Ok(0) | Err(_) => "<EOF>".into(),
        Ok(_) => l.trim_end().to_string(),
    }
}

fn kb(d: &Daemon) -> (u64, u64) {
    d.memory_kb().expect("daemon memory from /proc")
}

fn message(token: &str) -> Vec<u8> {
    format!("Subject: {token}\r\nMessage-ID: <{token}@legit.test>\r\n\r\nlegit mail\r\n")
        .into_bytes()
}

fn delivered(sink: &Sink, token: &str) -> bool {
    sink.txns().iter().any(|t| {
        t.text()
            .contains(&format!("Message-ID: <{token}@legit.test>"))
    })
}

/// A legitimate client sends one message and it reaches the primary.
fn legit_mail_flows(d: &Daemon, sink: &Sink, token: &str) -> Duration {
    let t = Instant::now();
    let mut c = d.client();
    assert!(c.greeting.starts_with("220"), "{token}: {}", c.greeting);
    let r = c.send_mail("alice@sender.test", &["bob@example.jp"], &message(token));
    assert!(r.starts_with("250"), "{token}: {r}");
    c.cmd("QUIT");
    assert!(
        wait_for(15, || delivered(sink, token)),
        "{token} not relayed\n{}",
        d.log()
    );
    t.elapsed()
}

fn daemon(sink: &Sink, smtp: &str) -> Daemon {
    Daemon::start(
        &format!("example.jp smtp:[127.0.0.1]:{}\n", sink.port),
        "",
        &format!("[smtp]\n{smtp}"),
    )
}

fn stored_count(d: &Daemon) -> i64 {
    d.db()
        .query_row("SELECT count(*) FROM messages", [], |r| r.get(0))
        .unwrap()
}

#[test]
fn a_thousand_idle_connections_and_mail_still_flows() {
    // 1,100 sockets on each side: raise the soft descriptor limit up to
    // the hard one if needed (the daemon, started next, inherits it).
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a valid, owned struct.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        if lim.rlim_cur < 2500 && lim.rlim_max >= 2500 {
            lim.rlim_cur = 2500;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        }
    }
    assert!(
        lim.rlim_cur >= 2500,
        "this test needs `ulimit -n` >= 2500 (soft {}, hard {})",
        lim.rlim_cur,
        lim.rlim_max
    );
    let sink = Sink::start();
    let d = daemon(
        &sink,
        "max_connections = 1100\nmax_connections_per_ip = 1000\ncommand_timeout = \"120s\"\n",
    );
    // Let the daemon settle before the baseline.
    legit_mail_flows(&d, &sink, "before");
    let (base, _) = kb(&d);
    let started = Instant::now();
    let abuser = Ipv4Addr::new(127, 0, 0, 2);
    let mut idle: Vec<TcpStream> = (0..1000)
        .map(|i| connect_from(abuser, d.port).unwrap_or_else(|e| panic!("connection {i}: {e}")))
        .collect();
    for (i, s) in idle.iter_mut().enumerate() {
        let mut r = BufReader::new(s.try_clone().unwrap());
        let g = read_line(&mut r);
        assert!(g.starts_with("220"), "idle connection {i}: {g}");
    }
    let opened = started.elapsed();
    // The per-address limit: the 1,001st from the same address.
    let mut extra = BufReader::new(connect_from(abuser, d.port).unwrap());
    let g = read_line(&mut extra);
    assert!(g.starts_with("421 4.7.0"), "{g}");
    // The total limit: 100 more from elsewhere fill it; the next is refused.
    let other = Ipv4Addr::new(127, 0, 0, 3);
    let mut more: Vec<BufReader<TcpStream>> = (0..99)
        .map(|_| BufReader::new(connect_from(other, d.port).unwrap()))
        .collect();
    for r in more.iter_mut() {
        let g = read_line(r);
        assert!(g.starts_with("220"), "{g}");
    }
    // 1,099 taken: the legitimate client gets the last slot.
    let (rss_idle, _) = kb(&d);
    let during = legit_mail_flows(&d, &sink, "during");
    let mut last = BufReader::new(connect_from(Ipv4Addr::new(127, 0, 0, 4), d.port).unwrap());
    let mut full = BufReader::new(connect_from(Ipv4Addr::new(127, 0, 0, 5), d.port).unwrap());
    assert!(read_line(&mut last).starts_with("220"));
    let g = read_line(&mut full);
    assert!(g.starts_with("421 4.3.2"), "over max_connections: {g}");
    // Idle sessions still answer.
    for s in idle.iter_mut().step_by(100) {
        s.write_all(b"NOOP\r\n").unwrap();
        let mut r = BufReader::new(s.try_clone().unwrap());
        assert!(read_line(&mut r).starts_with("250"));
    }
    drop(idle);
    drop(more);
    drop(last);
    assert!(wait_for(10, || {
        let c = Client::connect(d.port);
        c.greeting.starts_with("220")
    }));
    let after = legit_mail_flows(&d, &sink, "after");
    let (rss_after, hwm) = kb(&d);
    let per_conn = (rss_idle.saturating_sub(base)) as f64 / 1099.0;
    eprintln!(
        "1,099 idle connections: opened and greeted in {opened:?}; VmRSS {base} kB before, {rss_idle} kB with them ({per_conn:.1} kB each), {rss_after} kB after; VmHWM {hwm} kB; legit mail relayed in {during:?} during, {after:?} after"
    );
    assert!(
        rss_idle < base + 100 * 1024,
        "1,099 idle sessions cost more than 100 MB: {base} -> {rss_idle} kB"
    );
}

#[test]
fn slowloris_is_cut_off_by_the_timeouts() {
    let sink = Sink::start();
    let d = daemon(
        &sink,
        "command_timeout = \"2s\"\nsession_timeout = \"8s\"\nmax_connections_per_ip = 100\n",
    );
    let port = d.port;
    let started = Instant::now();
    // Slower than command_timeout: one byte, then nothing for longer than
    // command_timeout: cut after one idle period.
    let slower = std::thread::spawn(move || {
        let mut s = connect_from(Ipv4Addr::new(127, 0, 0, 2), port).unwrap();
        let mut r = BufReader::new(s.try_clone().unwrap());
        assert!(read_line(&mut r).starts_with("220"));
        let t = Instant::now();
        s.write_all(b"E").unwrap();
        (read_line(&mut r), t.elapsed())
    });
    // One byte a second, in commands and in DATA: each read comes within
    // command_timeout, so only session_timeout ends them.
    let drip = |in_data: bool| {
        std::thread::spawn(move || {
            let mut s = connect_from(Ipv4Addr::new(127, 0, 0, 3), port).unwrap();
            let mut r = BufReader::new(s.try_clone().unwrap());
            assert!(read_line(&mut r).starts_with("220"));
            let t = Instant::now();
            if in_data {
                s.write_all(b"EHLO drip.example\r\n").unwrap();
                while !read_line(&mut r).starts_with("250 ") {}
                s.write_all(b"MAIL FROM:<a@drip.example>\r\nRCPT TO:<bob@example.jp>\r\nDATA\r\n")
                    .unwrap();
                for _ in 0..3 {
                    read_line(&mut r);
                }
            }
            let mut bytes = b"Subject: drip\r\n\r\n".iter().cycle();
            let mut reply = String::new();
            while t.elapsed() < Duration::from_secs(20) {
                let b = if in_data {
                    *bytes.next().unwrap()
                } else {
                    b'N'
                };
                if s.write_all(&[b]).is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(1000));
                s.set_nonblocking(true).unwrap();
                let mut buf = [0u8; 256];
                let got = s.read(&mut buf);
                s.set_nonblocking(false).unwrap();
                match got {
                    Ok(0) => break,
                    Ok(n) => {
                        reply.push_str(&String::from_utf8_lossy(&buf[..n]));
                        break;
                    }
                    Err(_) => {}
                }
            }
            (reply.trim_end().to_string(), t.elapsed())
        })
    };
    let drips: Vec<_> = (0..20).map(|i| drip(i % 2 == 1)).collect();
    // Meanwhile legitimate mail flows.
    let legit = legit_mail_flows(&d, &sink, "slowloris");
    let (reply, took) = slower.join().unwrap();
    assert!(
        reply.starts_with("421 4.4.2"),
        "slower than command_timeout: {reply}"
    );
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(4),
        "{took:?}"
    );
    let mut worst = Duration::ZERO;
    for h in drips {
        let (reply, took) = h.join().unwrap();
        assert!(
            reply.starts_with("421 4.4.2") && reply.contains("session time limit"),
            "drip: {reply:?} after {took:?}"
        );
        assert!(took < Duration::from_secs(11), "{took:?}");
        worst = worst.max(took);
    }
    assert_eq!(
        stored_count(&d),
        0,
        "nothing of the dripped data was stored"
    );
    let (rss, hwm) = kb(&d);
    eprintln!(
        "slowloris: a byte then silence cut by command_timeout (2 s) after {took:?}; 20 at 1 byte/s (half in DATA) cut by session_timeout (8 s), last after {worst:?}; legit mail relayed in {legit:?}; VmRSS {rss} kB, VmHWM {hwm} kB; {:?}",
        started.elapsed()
    );
}

#[test]
fn overlong_lines_and_command_floods_hit_their_limits() {
    let sink = Sink::start();
    let d = daemon(&sink, "command_timeout = \"5s\"\n");
    let (base, _) = kb(&d);
    let mut c = d.client();
    // One 1 MB line: refused, the session goes on.
    let long = format!("NOOP {}", "x".repeat(1 << 20));
    assert!(c.cmd(&long).starts_with("500 5.5.2"));
    assert!(c.cmd("NOOP").starts_with("250"));
    // 64 MB with no line end at all: memory stays flat, then one 500.
    let chunk = vec![b'A'; 1 << 20];
    for _ in 0..64 {
        c.send_raw(&chunk);
    }
    c.send_raw(b"\r\n");
    assert!(c.reply().starts_with("500 5.5.2"));
    let (rss_long, _) = kb(&d);
    // Overlong lines are errors: the 20th ends the session.
    let mut c = d.client();
    let mut replies = Vec::new();
    let writer = {
        let mut w = c.stream.try_clone().unwrap();
        let line = format!("{long}\r\n");
        // mx2 hangs up after the 20th: later writes may fail.
        std::thread::spawn(move || {
            for _ in 0..25 {
                if w.write_all(line.as_bytes()).is_err() {
                    break;
                }
            }
        })
    };
    loop {
        let r = c.reply();
        let end = !r.starts_with("500");
        replies.push(r);
        if end {
            break;
        }
    }
    writer.join().unwrap();
    assert_eq!(replies.len(), 21, "{:?}", &replies[replies.len() - 2..]);
    assert!(replies[20].starts_with("421 4.7.0"), "{}", replies[20]);
    // NOOP flood, RSET flood: the junk command limit (100).
    for junk in ["NOOP", "RSET", "VRFY bob"] {
        let mut c = d.client();
        c.cmd("EHLO flood.example");
        let mut burst = String::new();
        for _ in 0..150 {
            burst.push_str(junk);
            burst.push_str("\r\n");
        }
        c.send_raw(burst.as_bytes());
        let mut ok = 0;
        let last = loop {
            let r = c.reply();
            if r.starts_with("250") || r.starts_with("252") {
                ok += 1;
            } else {
                break r;
            }
        };
        assert_eq!(ok, 100, "{junk}");
        assert!(last.starts_with("421 4.7.0"), "{junk}: {last}");
        assert!(c.reply().ends_with("<EOF>"), "closed after the 421");
    }
    // Unknown commands: the error limit (20).
    let mut c = d.client();
    let mut burst = String::new();
    for i in 0..50 {
        burst.push_str(&format!("XYZZY{i}\r\n"));
    }
    c.send_raw(burst.as_bytes());
    let mut n = 0;
    let last = loop {
        let r = c.reply();
        if r.starts_with("502") {
            n += 1;
        } else {
            break r;
        }
    };
    assert_eq!(n, 20);
    assert!(last.starts_with("421 4.7.0"), "{last}");
    // Invalid UTF-8 where keywords and addresses go: every line answered
    // (a multi-byte character inside "TO:" once panicked the session).
    let mut c = d.client();
    for line in [
        &b"EHLO \xc3\x28.example"[..],
        b"MAIL FROM\xae:<a@b.example>",
        b"MAIL FROM:<\xff@\xfe.example>",
        b"MAIL FROM:<a@b.example>",
        b"RCPT TO\xae:<bob@example.jp>",
        b"RCPT TO:<b\xffob@example.jp>",
        b"\xff\xfe\xfd\x00",
    ] {
        let mut l = line.to_vec();
        l.extend_from_slice(b"\r\n");
        c.send_raw(&l);
        let r = c.reply();
        assert!(
            r.starts_with('2') || r.starts_with('5'),
            "{:?}: {r}",
            String::from_utf8_lossy(line)
        );
    }
    assert!(c.cmd("NOOP").starts_with("250"), "session alive");
    // RCPT flood: max_recipients (100) holds, all the rest 452.
    let mut c = d.client();
    c.cmd("EHLO rcpt.example");
    c.cmd("MAIL FROM:<a@flood.example>");
    let writer = {
        let mut w = c.stream.try_clone().unwrap();
        std::thread::spawn(move || {
            let mut burst = Vec::new();
            for i in 0..20_000 {
                burst.extend_from_slice(format!("RCPT TO:<u{i}@example.jp>\r\n").as_bytes());
            }
            w.write_all(&burst).unwrap();
        })
    };
    let (mut ok, mut full) = (0, 0);
    for _ in 0..20_000 {
        let r = c.reply();
        if r.starts_with("250") {
            ok += 1;
        } else if r.starts_with("452 4.5.3") {
            full += 1;
        } else {
            panic!("{r}");
        }
    }
    writer.join().unwrap();
    assert_eq!((ok, full), (100, 19_900));
    c.cmd("RSET");
    let (rss, hwm) = kb(&d);
    let legit = legit_mail_flows(&d, &sink, "floods");
    assert!(!d.log().contains("panicked"), "{}", d.log());
    eprintln!(
        "overlong lines and floods: VmRSS {base} kB at start, {rss_long} kB after a 64 MB line, {rss} kB after the floods; VmHWM {hwm} kB; legit mail relayed in {legit:?}"
    );
    assert!(
        hwm < base + 64 * 1024,
        "a 64 MB line must not be buffered: VmHWM {hwm} kB (start {base} kB)"
    );
}

#[test]
fn pipelining_abuse_is_answered_in_order_and_stays_bounded() {
    let sink = Sink::start();
    let d = daemon(&sink, "command_timeout = \"3s\"\n");
    let (base, _) = kb(&d);
    // The body before the 354: taken as the message, once, intact.
    let mut c = d.client();
    c.cmd("EHLO early.example");
    c.send_raw(
        b"MAIL FROM:<a@early.example>\r\nRCPT TO:<bob@example.jp>\r\nDATA\r\nSubject: before354\r\nMessage-ID: <before354@legit.test>\r\n\r\nbody\r\n.\r\nQUIT\r\n",
    );
    for want in ["250 2.1.0", "250 2.1.5", "354", "250 2.0.0", "221"] {
        let r = c.reply();
        assert!(r.starts_with(want), "{want}: {r}");
    }
    assert!(wait_for(10, || delivered(&sink, "before354")));

    // 500 whole transactions in one burst, replies read by another thread.
    let mut c = d.client();
    c.cmd("EHLO burst.example");
    let n = 500;
    let started = Instant::now();
    let writer = {
        let mut w = c.stream.try_clone().unwrap();
        std::thread::spawn(move || {
            let mut burst = Vec::new();
            for i in 0..n {
                burst.extend_from_slice(
                    format!("MAIL FROM:<a@burst.example>\r\nRCPT TO:<bob@example.jp>\r\nDATA\r\nSubject: burst {i}\r\nMessage-ID: <burst{i}@legit.test>\r\n\r\n..dot line {i}\r\n.\r\n").as_bytes(),
                );
            }
            w.write_all(&burst).unwrap();
            burst.len()
        })
    };
    for i in 0..n {
        for want in ["250 2.1.0", "250 2.1.5", "354", "250 2.0.0"] {
            let r = c.reply();
            assert!(r.starts_with(want), "transaction {i}, {want}: {r}");
        }
    }
    let bytes = writer.join().unwrap();
    let took = started.elapsed();
    assert!(
        wait_for(60, || sink.count() > n),
        "{} relayed",
        sink.count()
    );
    let burst_copies = sink
        .txns()
        .iter()
        .filter(|t| t.text().contains("burst.example") || t.text().contains("Subject: burst "))
        .count();
    assert_eq!(burst_copies, n);
    assert!(sink
        .txns()
        .iter()
        .any(|t| t.text().contains(".dot line 7\r\n")));

    // A flood that never reads its replies: mx2 stops reading when its
    // replies cannot be written, and gives up after command_timeout.
    let mut s = connect_from(Ipv4Addr::new(127, 0, 0, 2), d.port).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    assert!(read_line(&mut r).starts_with("220"));
    s.write_all(b"EHLO deaf.example\r\nMAIL FROM:<a@deaf.example>\r\n")
        .unwrap();
    let line = b"RCPT TO:<someone-with-a-long-name@example.jp>\r\n".repeat(1000);
    let flood_start = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let mut sent = 0usize;
    s.set_write_timeout(Some(Duration::from_secs(1))).unwrap();
    while flood_start.elapsed() < Duration::from_secs(15) && !stop.load(Ordering::SeqCst) {
        match s.write(&line) {
            Ok(k) => sent += k,
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => break,
        }
    }
    let (rss_deaf, _) = kb(&d);
    // Now read: mx2 wrote what it could, then closed the session.
    let mut all = Vec::new();
    let _ = r.read_to_end(&mut all);
    let closed_after = flood_start.elapsed();
    let text = String::from_utf8_lossy(&all);
    assert!(
        closed_after < Duration::from_secs(20),
        "the deaf client was not cut off: {closed_after:?}"
    );
    assert!(sent < 200 << 20, "mx2 kept reading: {sent} bytes");
    let legit = legit_mail_flows(&d, &sink, "pipelining");
    let (rss, hwm) = kb(&d);
    eprintln!(
        "pipelining: {n} transactions ({bytes} bytes) in one burst answered in {took:?}; a client that never reads sent {sent} bytes before being cut off after {closed_after:?} ({} reply bytes waiting); VmRSS {base} kB at start, {rss_deaf} kB during the deaf flood, {rss} kB at the end; VmHWM {hwm} kB; legit mail relayed in {legit:?}",
        text.len()
    );
    assert!(
        hwm < base + 64 * 1024,
        "pipelining abuse grew memory: VmHWM {hwm} kB (start {base} kB)"
    );
}

#[test]
fn early_talkers_and_vanishing_clients_store_nothing() {
    let sink = Sink::start();
    let d = daemon(&sink, "max_connections_per_ip = 200\n");
    let port = d.port;
    let talkers: Vec<_> = (0..50)
        .map(|_| {
            std::thread::spawn(move || {
                let mut s = connect_from(Ipv4Addr::new(127, 0, 0, 2), port).unwrap();
                s.write_all(b"EHLO spam.example\r\nMAIL FROM:<spam@spam.example>\r\n")
                    .unwrap();
                let mut out = String::new();
                let _ = s.read_to_string(&mut out);
                out
            })
        })
        .collect();
    // Clients that vanish in the middle of DATA: in the body, and between
    // the body's last line and the final dot.
    let vanish: Vec<_> = (0..50)
        .map(|i| {
            std::thread::spawn(move || {
                let s = connect_from(Ipv4Addr::new(127, 0, 0, 3), port).unwrap();
                let mut r = BufReader::new(s.try_clone().unwrap());
                let mut w = s;
                assert!(read_line(&mut r).starts_with("220"));
                w.write_all(b"EHLO gone.example\r\n").unwrap();
                while !read_line(&mut r).starts_with("250 ") {}
                w.write_all(b"MAIL FROM:<a@gone.example>\r\nRCPT TO:<bob@example.jp>\r\nDATA\r\n")
                    .unwrap();
                for _ in 0..3 {
                    read_line(&mut r);
                }
                let tail: &[u8] = if i % 2 == 0 {
                    b"half a li"
                } else {
                    b"last line\r\n"
                };
                w.write_all(b"Subject: gone\r\n\r\n").unwrap();
                w.write_all(tail).unwrap();
                // Gone (a reset when i % 3 == 0, a clean close otherwise).
                if i % 3 == 0 {
                    let sock = socket2::Socket::from(w);
                    let _ = sock.set_linger(Some(Duration::ZERO));
                    drop(sock);
                } else {
                    drop(w);
                }
            })
        })
        .collect();
    let legit = legit_mail_flows(&d, &sink, "talkers");
    for t in talkers {
        let out = t.join().unwrap();
        assert!(out.starts_with("554 5.5.1"), "early talker: {out:?}");
        assert!(!out.contains("250"), "{out}");
    }
    for v in vanish {
        v.join().unwrap();
    }
    assert!(
        wait_for(10, || d
            .log()
            .matches(" after DATA from [127.0.0.3]")
            .count()
            >= 50),
        "{}",
        d.log()
    );
    std::thread::sleep(Duration::from_millis(500));
    let texts: Vec<String> = sink.txns().iter().map(|t| t.text()).collect();
    assert_eq!(texts.len(), 1, "only the legitimate message was relayed");
    assert!(texts[0].contains("Message-ID: <talkers@legit.test>"));
    assert_eq!(
        stored_count(&d),
        0,
        "nothing of the vanished clients stored"
    );
    let (rss, hwm) = kb(&d);
    eprintln!(
        "50 early talkers refused 554 5.5.1, 50 clients gone mid-DATA stored nothing; legit mail relayed in {legit:?}; VmRSS {rss} kB, VmHWM {hwm} kB"
    );
}
