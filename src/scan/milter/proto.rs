//! The milter wire protocol (version 6, as sendmail's libmilter and
//! Postfix speak it): packet framing, the option negotiation, and the
//! milter's replies.
//!
//! A packet is a 4-byte big-endian length (counting the command byte),
//! one command byte, and the data. Strings are NUL-terminated.

use anyhow::{anyhow, bail, Result};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

pub const VERSION: u32 = 6;

// MTA → milter commands.
pub const C_ABORT: u8 = b'A';
pub const C_BODY: u8 = b'B';
pub const C_CONNECT: u8 = b'C';
pub const C_MACRO: u8 = b'D';
pub const C_BODYEOB: u8 = b'E';
pub const C_HELO: u8 = b'H';
pub const C_HEADER: u8 = b'L';
pub const C_MAIL: u8 = b'M';
pub const C_EOH: u8 = b'N';
pub const C_OPTNEG: u8 = b'O';
pub const C_QUIT: u8 = b'Q';
pub const C_RCPT: u8 = b'R';
pub const C_DATA: u8 = b'T';

// Milter → MTA replies.
pub const R_ADDRCPT: u8 = b'+';
pub const R_DELRCPT: u8 = b'-';
pub const R_ADDRCPT_PAR: u8 = b'2';
pub const R_SHUTDOWN: u8 = b'4';
pub const R_ACCEPT: u8 = b'a';
pub const R_REPLBODY: u8 = b'b';
pub const R_CONTINUE: u8 = b'c';
pub const R_DISCARD: u8 = b'd';
pub const R_CHGFROM: u8 = b'e';
pub const R_CONN_FAIL: u8 = b'f';
pub const R_ADDHEADER: u8 = b'h';
pub const R_INSHEADER: u8 = b'i';
pub const R_SETSYMLIST: u8 = b'l';
pub const R_CHGHEADER: u8 = b'm';
pub const R_PROGRESS: u8 = b'p';
pub const R_QUARANTINE: u8 = b'q';
pub const R_REJECT: u8 = b'r';
pub const R_SKIP: u8 = b's';
pub const R_TEMPFAIL: u8 = b't';
pub const R_REPLYCODE: u8 = b'y';
pub const R_OPTNEG: u8 = b'O';

// Actions (SMFIF_*): what a milter may do at end of message. mx2 allows all.
pub const F_ADDHDRS: u32 = 0x01;
pub const F_CHGBODY: u32 = 0x02;
pub const F_ADDRCPT: u32 = 0x04;
pub const F_DELRCPT: u32 = 0x08;
pub const F_CHGHDRS: u32 = 0x10;
pub const F_QUARANTINE: u32 = 0x20;
pub const F_CHGFROM: u32 = 0x40;
pub const F_ADDRCPT_PAR: u32 = 0x80;
pub const F_SETSYMLIST: u32 = 0x100;
pub const ACTIONS_OFFERED: u32 = F_ADDHDRS
    | F_CHGBODY
    | F_ADDRCPT
    | F_DELRCPT
    | F_CHGHDRS
    | F_QUARANTINE
    | F_CHGFROM
    | F_ADDRCPT_PAR
    | F_SETSYMLIST;

// Protocol steps (SMFIP_*): what the milter asks the MTA to leave out.
pub const P_NOCONNECT: u32 = 0x01;
pub const P_NOHELO: u32 = 0x02;
pub const P_NOMAIL: u32 = 0x04;
pub const P_NORCPT: u32 = 0x08;
pub const P_NOBODY: u32 = 0x10;
pub const P_NOHDRS: u32 = 0x20;
pub const P_NOEOH: u32 = 0x40;
pub const P_NR_HDR: u32 = 0x80;
pub const P_NOUNKNOWN: u32 = 0x100;
pub const P_NODATA: u32 = 0x200;
pub const P_SKIP: u32 = 0x400;
pub const P_RCPT_REJ: u32 = 0x800;
pub const P_NR_CONN: u32 = 0x1000;
pub const P_NR_HELO: u32 = 0x2000;
pub const P_NR_MAIL: u32 = 0x4000;
pub const P_NR_RCPT: u32 = 0x8000;
pub const P_NR_DATA: u32 = 0x10000;
pub const P_NR_UNKN: u32 = 0x20000;
pub const P_NR_EOH: u32 = 0x40000;
pub const P_NR_BODY: u32 = 0x80000;
pub const P_HDR_LEADSPC: u32 = 0x100000;
/// Every step flag mx2 understands (no larger body chunks: MDS_256K/1M).
/// mx2 never sends SMFIC_UNKNOWN and refuses no recipient before the
/// milter sees it, so NOUNKNOWN, NR_UNKN and RCPT_REJ cost nothing.
pub const PROTOCOL_OFFERED: u32 = P_NOCONNECT
    | P_NOHELO
    | P_NOMAIL
    | P_NORCPT
    | P_NOBODY
    | P_NOHDRS
    | P_NOEOH
    | P_NR_HDR
    | P_NOUNKNOWN
    | P_NODATA
    | P_SKIP
    | P_RCPT_REJ
    | P_NR_CONN
    | P_NR_HELO
    | P_NR_MAIL
    | P_NR_RCPT
    | P_NR_DATA
    | P_NR_UNKN
    | P_NR_EOH
    | P_NR_BODY
    | P_HDR_LEADSPC;

/// Largest body chunk sent (Postfix's and libmilter's MILTER_CHUNK_SIZE).
pub const CHUNK: usize = 65535;
/// Largest packet accepted from a milter.
pub const MAX_PACKET: usize = 16 << 20;

/// Frames one packet.
pub fn packet(cmd: u8, data: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(5 + data.len());
    p.extend_from_slice(&((data.len() + 1) as u32).to_be_bytes());
    p.push(cmd);
    p.extend_from_slice(data);
    p
}

/// NUL-terminated strings, concatenated.
pub fn cstrings<S: AsRef<[u8]>>(items: &[S]) -> Vec<u8> {
    let mut d = Vec::new();
    for s in items {
        d.extend(s.as_ref().iter().copied().filter(|&b| b != 0));
        d.push(0);
    }
    d
}

/// `SMFIC_OPTNEG` with what mx2 offers.
pub fn optneg() -> Vec<u8> {
    let mut d = Vec::with_capacity(12);
    d.extend_from_slice(&VERSION.to_be_bytes());
    d.extend_from_slice(&ACTIONS_OFFERED.to_be_bytes());
    d.extend_from_slice(&PROTOCOL_OFFERED.to_be_bytes());
    packet(C_OPTNEG, &d)
}

/// `SMFIC_MACRO` for the command `stage`.
pub fn macros(stage: u8, pairs: &[(&str, String)]) -> Vec<u8> {
    let mut d = vec![stage];
    for (k, v) in pairs {
        d.extend_from_slice(&cstrings(&[k.as_bytes(), v.as_bytes()]));
    }
    packet(C_MACRO, &d)
}

/// `SMFIC_CONNECT`: host name, family (`4`, `6`, or `U` unknown), port, address.
pub fn connect(hostname: &str, ip: Option<std::net::IpAddr>, port: u16) -> Vec<u8> {
    let mut d = cstrings(&[hostname]);
    match ip {
        Some(ip) => {
            d.push(if ip.is_ipv4() { b'4' } else { b'6' });
            d.extend_from_slice(&port.to_be_bytes());
            d.extend_from_slice(&cstrings(&[ip.to_string()]));
        }
        None => d.push(b'U'),
    }
    packet(C_CONNECT, &d)
}

/// The milter's answer to `SMFIC_OPTNEG`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    pub version: u32,
    pub actions: u32,
    pub protocol: u32,
}

impl Negotiated {
    pub fn has(&self, flag: u32) -> bool {
        self.protocol & flag != 0
    }
}

pub fn parse_optneg(data: &[u8]) -> Result<Negotiated> {
    if data.len() < 12 {
        bail!("option negotiation reply too short ({} bytes)", data.len());
    }
    let word = |i: usize| u32::from_be_bytes([data[i], data[i + 1], data[i + 2], data[i + 3]]);
    let n = Negotiated {
        version: word(0),
        actions: word(4),
        protocol: word(8),
    };
    // Whatever follows is a SMFIR_SETSYMLIST macro list; mx2 sends a fixed set.
    if n.version < 2 || n.version > VERSION {
        bail!("milter protocol version {} not supported", n.version);
    }
    if n.protocol & !PROTOCOL_OFFERED != 0 {
        bail!(
            "milter asks for protocol flags 0x{:x} that mx2 does not offer",
            n.protocol & !PROTOCOL_OFFERED
        );
    }
    Ok(n)
}

/// One reply from a milter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Accept,
    Continue,
    Discard,
    Reject,
    Tempfail,
    /// `SMFIR_REPLYCODE`: a full SMTP reply (`550 5.7.1 text`).
    Code(String),
    Progress,
    Skip,
    ConnFail,
    Shutdown,
    // End-of-message modifications.
    AddHeader {
        name: String,
        value: Vec<u8>,
    },
    InsHeader {
        index: u32,
        name: String,
        value: Vec<u8>,
    },
    ChgHeader {
        index: u32,
        name: String,
        value: Vec<u8>,
    },
    ReplBody(Vec<u8>),
    AddRcpt {
        rcpt: String,
        args: Option<String>,
    },
    DelRcpt(String),
    ChgFrom {
        from: String,
        args: Option<String>,
    },
    Quarantine(String),
}

/// Splits NUL-terminated strings (the last one may lack its NUL).
fn split_cstrings(data: &[u8]) -> Vec<&[u8]> {
    let data = data.strip_suffix(&[0]).unwrap_or(data);
    if data.is_empty() {
        return vec![];
    }
    data.split(|&b| b == 0).collect()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn index_and_rest(data: &[u8]) -> Result<(u32, &[u8])> {
    if data.len() < 4 {
        bail!("header index missing");
    }
    Ok((
        u32::from_be_bytes([data[0], data[1], data[2], data[3]]),
        &data[4..],
    ))
}

fn name_value(data: &[u8]) -> Result<(String, Vec<u8>)> {
    let parts = split_cstrings(data);
    match parts.as_slice() {
        [name] if !name.is_empty() => Ok((text(name), Vec::new())),
        [name, value, ..] if !name.is_empty() => Ok((text(name), value.to_vec())),
        _ => bail!("header name missing"),
    }
}

fn addr_args(data: &[u8]) -> Result<(String, Option<String>)> {
    let parts = split_cstrings(data);
    match parts.as_slice() {
        [a] => Ok((text(a), None)),
        [a, args, ..] => Ok((text(a), Some(text(args)).filter(|s| !s.is_empty()))),
        [] => bail!("address missing"),
    }
}

/// Decodes one reply packet.
pub fn parse_reply(cmd: u8, data: &[u8]) -> Result<Reply> {
    Ok(match cmd {
        R_ACCEPT => Reply::Accept,
        R_CONTINUE => Reply::Continue,
        R_DISCARD => Reply::Discard,
        R_REJECT => Reply::Reject,
        R_TEMPFAIL => Reply::Tempfail,
        R_PROGRESS => Reply::Progress,
        R_SKIP => Reply::Skip,
        R_CONN_FAIL => Reply::ConnFail,
        R_SHUTDOWN => Reply::Shutdown,
        R_REPLYCODE => Reply::Code(text(data.strip_suffix(&[0]).unwrap_or(data))),
        R_ADDHEADER => {
            let (name, value) = name_value(data)?;
            Reply::AddHeader { name, value }
        }
        R_INSHEADER => {
            let (index, rest) = index_and_rest(data)?;
            let (name, value) = name_value(rest)?;
            Reply::InsHeader { index, name, value }
        }
        R_CHGHEADER => {
            let (index, rest) = index_and_rest(data)?;
            let (name, value) = name_value(rest)?;
            Reply::ChgHeader { index, name, value }
        }
        R_REPLBODY => Reply::ReplBody(data.to_vec()),
        R_ADDRCPT | R_ADDRCPT_PAR => {
            let (rcpt, args) = addr_args(data)?;
            Reply::AddRcpt { rcpt, args }
        }
        R_DELRCPT => Reply::DelRcpt(addr_args(data)?.0),
        R_CHGFROM => {
            let (from, args) = addr_args(data)?;
            Reply::ChgFrom { from, args }
        }
        R_QUARANTINE => Reply::Quarantine(text(data.strip_suffix(&[0]).unwrap_or(data))),
        R_SETSYMLIST | R_OPTNEG => bail!("unexpected reply {:?} after negotiation", cmd as char),
        other => bail!("unknown milter reply {:?}", other as char),
    })
}

/// Reads one packet: (command, data).
pub async fn read_packet<R: AsyncRead + Unpin + ?Sized>(r: &mut R) -> Result<(u8, Vec<u8>)> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len)
        .await
        .map_err(|e| anyhow!("reading from milter: {e}"))?;
    let len = u32::from_be_bytes(len) as usize;
    if len == 0 || len > MAX_PACKET {
        bail!("bad milter packet length {len}");
    }
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf)
        .await
        .map_err(|e| anyhow!("reading from milter: {e}"))?;
    let cmd = buf[0];
    buf.remove(0);
    Ok((cmd, buf))
}

pub async fn write_all<W: AsyncWrite + Unpin + ?Sized>(w: &mut W, bytes: &[u8]) -> Result<()> {
    w.write_all(bytes)
        .await
        .map_err(|e| anyhow!("writing to milter: {e}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing() {
        assert_eq!(PROTOCOL_OFFERED, 0x1F_FFFF);
        assert_eq!(packet(C_EOH, b""), b"\0\0\0\x01N");
        assert_eq!(packet(C_BODY, b"hi"), b"\0\0\0\x03Bhi");
        assert_eq!(
            optneg(),
            b"\0\0\0\x0dO\0\0\0\x06\0\0\x01\xff\0\x1f\xff\xff".to_vec()
        );
        assert_eq!(cstrings(&["a", "b\0c"]), b"a\0bc\0");
        assert_eq!(
            macros(
                C_MAIL,
                &[("i", "ID1".into()), ("{mail_addr}", "a@b".into())]
            ),
            packet(b'D', b"Mi\0ID1\0{mail_addr}\0a@b\0")
        );
    }

    #[test]
    fn connect_packets() {
        let ip: std::net::IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(
            connect("[192.0.2.1]", Some(ip), 25),
            packet(b'C', b"[192.0.2.1]\x004\x00\x19192.0.2.1\0")
        );
        let ip6: std::net::IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(
            connect("h", Some(ip6), 0),
            packet(b'C', b"h\x006\0\x002001:db8::1\0")
        );
        assert_eq!(connect("h", None, 0), packet(b'C', b"h\0U"));
    }

    #[test]
    fn negotiation() {
        let mut d = Vec::new();
        for w in [6u32, F_ADDHDRS | F_CHGHDRS, P_NOCONNECT | P_NR_HDR] {
            d.extend_from_slice(&w.to_be_bytes());
        }
        let n = parse_optneg(&d).unwrap();
        assert_eq!(n.version, 6);
        assert!(n.has(P_NR_HDR) && n.has(P_NOCONNECT) && !n.has(P_NOHELO));
        // A trailing symbol list is fine.
        let mut with_syms = d.clone();
        with_syms.extend_from_slice(b"\0\0\0\x01{i}\0");
        assert!(parse_optneg(&with_syms).is_ok());
        assert!(parse_optneg(&d[..8]).is_err());
        let mut bad = d.clone();
        bad[8..12].copy_from_slice(&0x1000_0000u32.to_be_bytes());
        assert!(parse_optneg(&bad).is_err());
        let mut old = d;
        old[..4].copy_from_slice(&1u32.to_be_bytes());
        assert!(parse_optneg(&old).is_err());
    }

    #[test]
    fn replies() {
        assert_eq!(parse_reply(b'c', b"").unwrap(), Reply::Continue);
        assert_eq!(
            parse_reply(b'y', b"550 5.7.1 go away\0").unwrap(),
            Reply::Code("550 5.7.1 go away".into())
        );
        assert_eq!(
            parse_reply(b'h', b"X-Virus-Status\0Clean\0").unwrap(),
            Reply::AddHeader {
                name: "X-Virus-Status".into(),
                value: b"Clean".to_vec()
            }
        );
        assert_eq!(
            parse_reply(b'm', b"\0\0\0\x02X-Spam-Flag\0\0").unwrap(),
            Reply::ChgHeader {
                index: 2,
                name: "X-Spam-Flag".into(),
                value: vec![]
            }
        );
        assert_eq!(
            parse_reply(b'i', b"\0\0\0\0X-Top\0 v\0").unwrap(),
            Reply::InsHeader {
                index: 0,
                name: "X-Top".into(),
                value: b" v".to_vec()
            }
        );
        assert_eq!(
            parse_reply(b'2', b"<a@b>\0NOTIFY=NEVER\0").unwrap(),
            Reply::AddRcpt {
                rcpt: "<a@b>".into(),
                args: Some("NOTIFY=NEVER".into())
            }
        );
        assert_eq!(
            parse_reply(b'-', b"<a@b>\0").unwrap(),
            Reply::DelRcpt("<a@b>".into())
        );
        assert_eq!(
            parse_reply(b'q', b"virus\0").unwrap(),
            Reply::Quarantine("virus".into())
        );
        assert_eq!(
            parse_reply(b'b', b"\0body").unwrap(),
            Reply::ReplBody(b"\0body".to_vec())
        );
        assert!(parse_reply(b'h', b"").is_err());
        assert!(parse_reply(b'm', b"\0\0").is_err());
        assert!(parse_reply(b'Z', b"").is_err());
    }

    #[tokio::test]
    async fn reads_packets() {
        let mut input: &[u8] = b"\0\0\0\x01c\0\0\0\x03hab\0\0\0\0";
        assert_eq!(read_packet(&mut input).await.unwrap(), (b'c', vec![]));
        assert_eq!(
            read_packet(&mut input).await.unwrap(),
            (b'h', b"ab".to_vec())
        );
        assert!(read_packet(&mut input).await.is_err());
    }
}
