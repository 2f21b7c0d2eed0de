//! Wire tests of cross-message pipelining (`deliver::transaction` with a
//! `prev`): a scripted server checks the order of bytes the client sends
//! and answers the first message's end of data in different ways.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use super::client::Session;
use super::deliver::{finish, transaction, End, Progress, TxOutcome};
use super::job::{Job, Msg, Rcpt};
use super::outcome::Class;

/// How the scripted server answers the first message's end of data.
#[derive(Clone, Copy)]
enum First {
    Reply(&'static str),
    /// Closes the connection instead of answering.
    HangUp,
}

/// What the server saw.
struct Seen {
    /// The second MAIL FROM arrived before the first end-of-data reply.
    mail_before_reply: bool,
    /// Message bodies received, in order.
    bodies: Vec<String>,
}

fn serve(first: First) -> (SocketAddr, std::thread::JoinHandle<Seen>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let h = std::thread::spawn(move || {
        let (s, _) = l.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        script(s, first)
    });
    (addr, h)
}

fn script(s: TcpStream, first: First) -> Seen {
    let mut out = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    let mut seen = Seen {
        mail_before_reply: false,
        bodies: Vec::new(),
    };
    let mut line = String::new();
    let read = |r: &mut BufReader<TcpStream>, line: &mut String| {
        line.clear();
        r.read_line(line).unwrap_or(0) > 0
    };
    out.write_all(b"220 fake ESMTP\r\n").unwrap();
    read(&mut r, &mut line);
    out.write_all(b"250-fake\r\n250-PIPELINING\r\n250 8BITMIME\r\n")
        .unwrap();
    let mut carried = None;
    for n in 0..2 {
        // MAIL, RCPT, DATA (the MAIL may have been read already).
        let mail = carried.take().unwrap_or_else(|| {
            read(&mut r, &mut line);
            line.clone()
        });
        if !mail.starts_with("MAIL FROM:") {
            return seen;
        }
        read(&mut r, &mut line);
        read(&mut r, &mut line);
        out.write_all(b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 go\r\n")
            .unwrap();
        let mut body = String::new();
        loop {
            if !read(&mut r, &mut line) || line == ".\r\n" {
                break;
            }
            body.push_str(&line);
        }
        seen.bodies.push(body);
        if n == 0 {
            // Hold the reply: a pipelining client sends the next MAIL first.
            if read(&mut r, &mut line) && line.starts_with("MAIL FROM:") {
                seen.mail_before_reply = true;
                carried = Some(line.clone());
            }
            match first {
                First::Reply(text) => {
                    out.write_all(format!("{text}\r\n").as_bytes()).unwrap();
                    if text.starts_with("421") {
                        return seen;
                    }
                }
                First::HangUp => return seen,
            }
        } else {
            out.write_all(b"250 2.0.0 Ok: second\r\n").unwrap();
        }
    }
    seen
}

fn job(n: u32) -> Job {
    Job {
        msg: Arc::new(Msg {
            id: format!("M{n}"),
            arrival: 0,
            sender: "s@sender.example".into(),
            body: None,
            smtputf8: false,
            ret: None,
            envid: None,
            origin: "smtp".into(),
        }),
        rcpts: vec![Rcpt {
            idx: 0,
            address: "u@example.jp".into(),
            domain: "example.jp".into(),
            attempts: 0,
            notify: None,
            orcpt: None,
            warned: false,
            lease_until: 0,
        }],
        body: None,
        wire: None,
    }
}

const T: Duration = Duration::from_secs(5);

/// Sends two messages the pipelined way; returns both outcomes.
async fn two(first: First) -> (TxOutcome, TxOutcome, Seen) {
    let (addr, server) = serve(first);
    let (mut s, _) = Session::connect("fake", addr, T, T).await.unwrap();
    s.hello("mx2.test").await.unwrap();
    let (none, p1) = transaction(&mut s, &job(1), b"Subject: one\r\n\r\n1\r\n", T, None).await;
    assert!(none.is_none());
    let Progress::AwaitingEnd(u1) = p1 else {
        panic!("a pipelining server: the content waits for the next write")
    };
    let (o1, p2) = transaction(&mut s, &job(2), b"Subject: two\r\n\r\n2\r\n", T, Some(u1)).await;
    let o1 = o1.expect("the first outcome comes back with the second transaction");
    let o2 = match p2 {
        Progress::AwaitingEnd(u2) => finish(&mut s, u2, T).await,
        Progress::Done(o) => o,
    };
    drop(s);
    (o1, o2, server.join().unwrap())
}

#[tokio::test]
async fn content_and_next_commands_share_a_round_trip() {
    let (o1, o2, seen) = two(First::Reply("250 2.0.0 Ok: first")).await;
    assert!(
        seen.mail_before_reply,
        "next MAIL sent before the reply to the first"
    );
    assert_eq!(
        seen.bodies,
        ["Subject: one\r\n\r\n1\r\n", "Subject: two\r\n\r\n2\r\n"]
    );
    assert_eq!((o1.end, o2.end), (End::Open, End::Open));
    assert_eq!(o1.results[0].class, Class::Sent);
    assert!(o1.results[0].text.contains("Ok: first"), "{:?}", o1.results);
    assert_eq!(o2.results[0].class, Class::Sent);
    assert!(
        o2.results[0].text.contains("Ok: second"),
        "{:?}",
        o2.results
    );
}

#[tokio::test]
async fn a_refused_message_does_not_affect_the_next() {
    let (o1, o2, seen) = two(First::Reply("554 5.7.1 content refused")).await;
    assert!(seen.mail_before_reply);
    assert_eq!(o1.results[0].class, Class::Perm);
    assert_eq!(o1.results[0].dsn, "5.7.1");
    assert_eq!(o1.end, End::Open);
    assert_eq!(o2.results[0].class, Class::Sent);
}

#[tokio::test]
async fn a_421_after_the_content_defers_it_and_leaves_the_next_undecided() {
    let (o1, o2, _) = two(First::Reply("421 4.3.2 going down")).await;
    assert_eq!(o1.results[0].class, Class::Temp);
    assert_eq!(o1.end, End::Broken);
    // Nothing was said about the second: retried on a new session.
    assert_eq!(o2.end, End::Stale);
}

#[tokio::test]
async fn a_lost_connection_after_the_content_is_reported_as_such() {
    let (o1, o2, _) = two(First::HangUp).await;
    assert_eq!(o1.results[0].class, Class::Temp);
    assert!(
        o1.results[0]
            .text
            .contains("message may be sent more than once"),
        "{}",
        o1.results[0].text
    );
    assert_eq!(o1.end, End::Broken);
    assert_eq!(o2.end, End::Stale);
}
