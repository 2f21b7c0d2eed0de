//! The operator's eight rules (SPEC §1) over a realistic 30-header message
//! as it leaves the scanners: Received chain, DKIM/ARC, SpamAssassin and
//! ClamAV headers (5 of which the rules remove), a 4 KB body.
//!
//! `CARGO_TARGET_DIR=/tmp/target-hc cargo bench -p header_checks`

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use header_checks::Rules;

const OPERATOR: &str = include_str!("../testdata/operator.rules");

fn message() -> Vec<u8> {
    let headers = "\
Received: from mail.example.net (mail.example.net [192.0.2.25])
\tby mx2.example.jp (mx2) with ESMTPS id 01JDQ7Z3V6K1
\tfor <bob@example.jp>; Mon, 23 Nov 2026 10:15:02 +0900
X-Spam-Checker-Version: SpamAssassin 4.0.0 (2022-12-13) on mx2.example.jp
X-Spam-Level:
X-Spam-Status: No, score=-1.0 required=5.0 tests=ALL_TRUSTED,DKIM_SIGNED,
\tDKIM_VALID,DKIM_VALID_AU,SPF_PASS autolearn=ham autolearn_force=no
\tversion=4.0.0
X-Virus-Scanned: clamav-milter 1.0.7 at mx2.example.jp
X-Virus-Status: Clean
Received: from out.example.net (out.example.net [198.51.100.7])
\tby mail.example.net (Postfix) with ESMTPS id 4XYZ123
\tfor <bob@example.jp>; Mon, 23 Nov 2026 10:15:01 +0900 (JST)
Received: from [10.0.0.5] (unknown [10.0.0.5])
\tby out.example.net (Postfix) with ESMTPSA id 4XYZ000
\tMon, 23 Nov 2026 10:15:00 +0900 (JST)
Authentication-Results: mail.example.net; dkim=pass header.d=example.net;
\tspf=pass smtp.mailfrom=alice@example.net; dmarc=pass header.from=example.net
ARC-Seal: i=1; a=rsa-sha256; t=1795385700; cv=none; d=example.net; s=arc;
\tb=c2VhbCBzaWduYXR1cmUgZ29lcyBoZXJlIGZvciBiZW5jaG1hcmtpbmc=
ARC-Message-Signature: i=1; a=rsa-sha256; c=relaxed/relaxed; d=example.net;
\ts=arc; t=1795385700; h=Date:From:To:Subject:Message-ID;
\tbh=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=; b=bWVzc2FnZSBzaWduYXR1cmU=
ARC-Authentication-Results: i=1; mail.example.net; dkim=pass
DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=example.net;
\ts=default; t=1795385700;
\tbh=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=;
\th=Date:From:To:Subject; b=dGhpcyBpcyBub3QgYSByZWFsIHNpZ25hdHVyZQ==
Date: Mon, 23 Nov 2026 10:15:00 +0900
From: Alice Example <alice@example.net>
Sender: Alice Example <alice@example.net>
Reply-To: Alice Example <alice@example.net>
To: Bob <bob@example.jp>
Cc: Carol <carol@example.jp>, Dave <dave@example.jp>
Subject: =?UTF-8?B?5Lya6K2w44Gu44GK55+l44KJ44Gb?=
Message-ID: <20261123101500.GA1234@example.net>
In-Reply-To: <20261122090000.GA1000@example.jp>
References: <20261120090000.GA0900@example.jp>
\t<20261122090000.GA1000@example.jp>
MIME-Version: 1.0
Content-Type: text/plain; charset=UTF-8
Content-Transfer-Encoding: 8bit
User-Agent: Mutt/2.2.12 (2023-09-09)
List-Id: <team.example.jp>
Precedence: list
X-Mailer: Mutt
";
    let mut msg = headers.replace('\n', "\r\n").into_bytes();
    msg.extend_from_slice(b"\r\n");
    for i in 0..64 {
        msg.extend_from_slice(
            format!("Line {i:02} of the body: lorem ipsum dolor sit amet, consectetur.\r\n")
                .as_bytes(),
        );
    }
    msg
}

fn bench(c: &mut Criterion) {
    let rules = Rules::parse(OPERATOR.as_bytes(), "operator.rules")
        .expect("operator rules load")
        .rules;
    let msg = message();
    let outcome = rules.apply(&msg);
    assert_eq!(outcome.hits.len(), 5);
    assert!(outcome.edit.is_some());

    c.bench_function("apply operator rules, 30 headers, 5 removed", |b| {
        b.iter(|| rules.apply(black_box(&msg)))
    });

    let clean = outcome.message(&msg);
    c.bench_function("apply operator rules, 25 headers, no hit", |b| {
        b.iter(|| rules.apply(black_box(&clean)))
    });

    c.bench_function("parse operator rules", |b| {
        b.iter(|| Rules::parse(black_box(OPERATOR.as_bytes()), "operator.rules"))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
