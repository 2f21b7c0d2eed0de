//! A tiny authoritative DNS server on loopback UDP for MX tests, shared by
//! the tests that include it with `#[path = "common/dns.rs"] mod dns;`.
#![allow(dead_code)]

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

#[derive(Clone, Debug)]
pub enum Rec {
    Mx(u16, &'static str),
    A([u8; 4]),
}

pub struct Dns {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Dns {
    pub fn start(records: Vec<(&'static str, Rec)>) -> Dns {
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind dns");
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let addr = sock.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let s2 = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while !s2.load(Ordering::SeqCst) {
                let Ok((n, peer)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                if let Some(resp) = answer(&buf[..n], &records) {
                    let _ = sock.send_to(&resp, peer);
                }
            }
        });
        Dns {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn encode_name(name: &str, out: &mut Vec<u8>) {
    for label in name
        .trim_end_matches('.')
        .split('.')
        .filter(|l| !l.is_empty())
    {
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
}

fn answer(q: &[u8], records: &[(&'static str, Rec)]) -> Option<Vec<u8>> {
    if q.len() < 12 {
        return None;
    }
    // The question name.
    let mut i = 12;
    let mut labels = Vec::new();
    loop {
        let len = *q.get(i)? as usize;
        i += 1;
        if len == 0 {
            break;
        }
        labels.push(String::from_utf8_lossy(q.get(i..i + len)?).to_ascii_lowercase());
        i += len;
    }
    let qtype = u16::from_be_bytes([*q.get(i)?, *q.get(i + 1)?]);
    let question_end = i + 4;
    let name = labels.join(".");
    let known = records.iter().any(|(n, _)| *n == name);
    let mut answers = Vec::new();
    let mut count = 0u16;
    for (n, r) in records.iter().filter(|(n, _)| *n == name) {
        let (rtype, rdata) = match r {
            Rec::Mx(pref, host) if qtype == 15 => {
                let mut d = pref.to_be_bytes().to_vec();
                encode_name(host, &mut d);
                (15u16, d)
            }
            Rec::A(ip) if qtype == 1 => (1u16, ip.to_vec()),
            _ => continue,
        };
        let _ = n;
        answers.extend_from_slice(&[0xC0, 0x0C]);
        answers.extend_from_slice(&rtype.to_be_bytes());
        answers.extend_from_slice(&1u16.to_be_bytes());
        answers.extend_from_slice(&60u32.to_be_bytes());
        answers.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        answers.extend_from_slice(&rdata);
        count += 1;
    }
    let rcode = if known { 0 } else { 3 };
    let mut out = Vec::new();
    out.extend_from_slice(&q[0..2]);
    out.push(0x84 | (q[2] & 0x01)); // QR, AA, RD copied
    out.push(0x80 | rcode); // RA
    out.extend_from_slice(&1u16.to_be_bytes());
    out.extend_from_slice(&count.to_be_bytes());
    out.extend_from_slice(&0u16.to_be_bytes());
    out.extend_from_slice(&0u16.to_be_bytes());
    out.extend_from_slice(q.get(12..question_end)?);
    out.extend_from_slice(&answers);
    Some(out)
}
