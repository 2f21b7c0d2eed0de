#!/usr/bin/env python3
"""Writes the interop message corpus (*.eml, CRLF line endings, deterministic).

The files are checked in; this script documents how they were made and can
regenerate them: python3 tests/interop/corpus/make.py
Texts are from the seed blog posts (Japanese notes on rebuilding a
secondary mail server).
"""
import base64, hashlib, os, quopri

HERE = os.path.dirname(os.path.abspath(__file__))
SUBJECT_JA = "セカンダリメールサーバの再構築"
TEXT_JA = [
    "セカンダリメールサーバは通常、利用者に開放しているメールサーバ(通常、プライマリメールサーバと称す)が",
    "不意にサービス不能状態になった時や、メンテナンス等で一時停止した際など、",
    "外部からの電子メールを代わりに且つ一時的に受け取るメールサーバです。",
    "弊社では、セカンダリメールサーバから電子メールの発信を出来るようにしていませんが、",
    "今回はプライマリメールサーバの負荷軽減目的で、明らかなコンピュータウィルスや、",
    "確実な spam メールを捨てる仕組みを設けました。",
]


def write(name, lines, final_crlf=True):
    data = "\r\n".join(lines).encode("utf-8") if isinstance(lines[0], str) else b"\r\n".join(lines)
    if final_crlf:
        data += b"\r\n"
    with open(os.path.join(HERE, name), "wb") as f:
        f.write(data)


def b_words(text, charset, codec, chunk):
    """RFC 2047 B encoded-words of at most `chunk` characters each."""
    out = []
    for i in range(0, len(text), chunk):
        raw = text[i:i + chunk].encode(codec)
        out.append("=?%s?B?%s?=" % (charset, base64.b64encode(raw).decode()))
    return out


def common(n, subject_lines, extra=()):
    return [
        "From: =?UTF-8?B?%s?= <alice@sender.example>" % base64.b64encode("山田 花子".encode()).decode(),
        "To: bob@example.jp",
        *subject_lines,
        "Date: Wed, 04 Jan 2023 06:22:%02d +0900" % n,
        "Message-ID: <corpus-%02d.20230104062200@sender.example>" % n,
        "MIME-Version: 1.0",
        *extra,
    ]


# 01: multipart/alternative (text/plain QP + text/html base64), spam headers a scanner added
html = "<html><body><p>" + "<br>\n".join(TEXT_JA) + "</p></body></html>\n"
plain_qp = quopri.encodestring("\n".join(TEXT_JA).encode() + b"\n").decode().replace("\n", "\r\n").rstrip("\r\n")
html_b64 = base64.encodebytes(html.encode()).decode().rstrip("\n").split("\n")
write("01-multipart-alternative.eml", common(1, ["Subject: =?UTF-8?B?%s?=" % base64.b64encode(SUBJECT_JA.encode()).decode()], [
    "X-Spam-Checker-Version: SpamAssassin 3.4.6 (2021-04-09) on mx2.example.jp",
    "X-Spam-Level: ",
    "X-Spam-Status: No, score=-1.9 required=5.0 tests=BAYES_00,DKIM_SIGNED,",
    "\tDKIM_VALID,SPF_HELO_NONE,SPF_PASS autolearn=ham autolearn_force=no",
    "\tversion=3.4.6",
    'Content-Type: multipart/alternative; boundary="=_alt_7f3a"',
]) + [
    "",
    "This is a multi-part message in MIME format.",
    "",
    "--=_alt_7f3a",
    "Content-Type: text/plain; charset=UTF-8",
    "Content-Transfer-Encoding: quoted-printable",
    "",
    *plain_qp.split("\r\n"),
    "",
    "--=_alt_7f3a",
    "Content-Type: text/html; charset=UTF-8",
    "Content-Transfer-Encoding: base64",
    "",
    *html_b64,
    "",
    "--=_alt_7f3a--",
])

# 02: multipart/mixed with a base64 binary attachment (deterministic bytes)
blob = b""
seed = b"mx2-interop"
while len(blob) < 6000:
    seed = hashlib.sha256(seed).digest()
    blob += seed
att = base64.encodebytes(blob[:6000]).decode().rstrip("\n").split("\n")
write("02-base64-attachment.eml", common(2, ["Subject: build log and diagram"], [
    "X-Virus-Scanned: clamav-milter 0.103.8 at mx2.example.jp",
    "X-Virus-Status: Clean",
    'Content-Type: multipart/mixed; boundary="----=_Part_0_12345.67890"',
]) + [
    "",
    "------=_Part_0_12345.67890",
    "Content-Type: text/plain; charset=us-ascii",
    "Content-Transfer-Encoding: 7bit",
    "",
    "The diagram is attached (20230103.png).",
    "",
    "------=_Part_0_12345.67890",
    'Content-Type: image/png; name="20230103.png"',
    'Content-Disposition: attachment; filename="20230103.png"',
    "Content-Transfer-Encoding: base64",
    "",
    *att,
    "------=_Part_0_12345.67890--",
])

# 03: quoted-printable with soft breaks, =3D, trailing-space protection
qp_text = ("header_checks = pcre:/etc/postfix/header_checks\n" + "\n".join(TEXT_JA) +
           "\nA line with trailing spaces   \n" + "x" * 150 + "\n")
qp = quopri.encodestring(qp_text.encode()).decode().replace("\n", "\r\n").rstrip("\r\n")
write("03-quoted-printable.eml", common(3, ["Subject: =?UTF-8?Q?=E3=83=A1=E3=83=BC=E3=83=AB=E3=82=B5=E3=83=BC=E3=83=90?="], [
    "Content-Type: text/plain; charset=UTF-8",
    "Content-Transfer-Encoding: quoted-printable",
]) + ["", *qp.split("\r\n")])

# 04: ISO-2022-JP (7bit with ESC sequences) subject and body, as Japanese MUAs send
subj = b_words(SUBJECT_JA, "ISO-2022-JP", "iso2022_jp", 8)
body = [line.encode("iso2022_jp") for line in TEXT_JA]
write("04-iso-2022-jp.eml", [s.encode() for s in common(4, ["Subject: " + subj[0], *[" " + w for w in subj[1:]]], [
    "Content-Type: text/plain; charset=ISO-2022-JP",
    "Content-Transfer-Encoding: 7bit",
    "X-Spam-Level: *",
])] + [b"", *body])

# 05: UTF-8 Japanese: encoded-word subject (headers stay ASCII), 8bit body
write("05-utf8-japanese-8bit.eml", common(5, ["Subject: =?UTF-8?B?%s?=" % base64.b64encode(("Re: " + SUBJECT_JA).encode()).decode()], [
    "Content-Type: text/plain; charset=UTF-8",
    "Content-Transfer-Encoding: 8bit",
    "X-Spam-Status: Yes, score=7.1 required=5.0",  # not "No": the rule keeps it
]) + ["", *TEXT_JA, "", "-- ", "署名"])

# 06: very long folded headers; every operator rule's header, folded, mixed case
refs = ["<%s.%d@lists.example.org>" % (hashlib.md5(str(i).encode()).hexdigest(), i) for i in range(70)]
to = ["user%02d@example.jp" % i for i in range(45)]
write("06-long-folded-headers.eml", [
    "Received: from mail.sender.example (mail.sender.example [192.0.2.10])",
    "\tby mx.lists.example.org (Postfix) with ESMTPS id 4NmXyZ1abc",
    "\tfor <list@lists.example.org>; Wed, 04 Jan 2023 06:20:00 +0900 (JST)",
    "DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=sender.example; s=sel1;",
    " h=from:to:subject:date:message-id:references:in-reply-to;",
    " bh=" + base64.b64encode(hashlib.sha256(b"body").digest()).decode() + ";",
    " b=" + base64.b64encode(hashlib.sha512(b"a").digest() * 4).decode()[:300],
    "From: alice@sender.example",
    "To: " + ",\r\n\t".join(to),
    "Subject: " + " ".join(["long"] * 30),
    " " + " ".join(["folded"] * 30),
    "Date: Wed, 04 Jan 2023 06:22:06 +0900",
    "Message-ID: <corpus-06.20230104062200@sender.example>",
    "In-Reply-To: " + refs[-1],
    "References: " + "\r\n ".join(refs),
    "x-spam-level: **",
    "X-SPAM-STATUS: no,",
    "  score=0.3",
    "  required=5.0 tests=LONG_HEADERS",
    "X-Virus-Scanned:",
    "\tclamav-milter 0.103.8",
    "\tat mx2.example.jp",
    "X-Spam-Checker-Version:",
    " SpamAssassin 3.4.6",
    "X-Virus-Status: Clean",
    "MIME-Version: 1.0",
    "Content-Type: text/plain; charset=us-ascii",
    "",
    "Headers above: %d References, %d recipients." % (len(refs), len(to)),
])

# 07: lines of exactly 998 octets (the RFC 5322 limit), ASCII and UTF-8
ja = ("再構築" * 400).encode()[:996]  # 996 bytes = 332 three-byte characters
write("07-line-998.eml", [s.encode() for s in common(7, ["Subject: 998-octet lines"], [
    "Content-Type: text/plain; charset=UTF-8",
    "Content-Transfer-Encoding: 8bit",
])] + [b"", b"A" * 998, b"." + b"B" * 997, ja + b"xy", b"end"])

# 08: no CRLF after the last line (SMTP clients add one; so does the primary)
write("08-no-final-crlf.eml", common(8, ["Subject: no final newline"], [
    "Content-Type: text/plain; charset=us-ascii",
]) + ["", "first line", "last line without CRLF"], final_crlf=False)

# 09: leading dots (dot-stuffing both ways) and a lone dot line inside the body
write("09-leading-dot.eml", common(9, ["Subject: leading dots"], [
    "Content-Type: text/plain; charset=us-ascii",
]) + ["", ".", "..", "...", ".hidden line", " . space first", ".", "after the lone dots", "."])

# 10: raw (unencoded) UTF-8 in Subject, a display name and an unstructured
# header, as some Japanese mailers send (RFC 6532 style, without SMTPUTF8)
write("10-raw-utf8-headers.eml", [
    "From: 山田 花子 <alice@sender.example>",
    "To: bob@example.jp",
    "Subject: " + SUBJECT_JA,
    "Date: Wed, 04 Jan 2023 06:22:10 +0900",
    "Message-ID: <corpus-10.20230104062200@sender.example>",
    "MIME-Version: 1.0",
    "X-Note: " + SUBJECT_JA + "(生の UTF-8 ヘッダ)",
    "X-Virus-Scanned: clamav-milter 0.103.8 at mx2.example.jp",
    "Content-Type: text/plain; charset=UTF-8",
    "Content-Transfer-Encoding: 8bit",
    "",
    *TEXT_JA,
])
