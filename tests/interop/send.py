#!/usr/bin/env python3
"""One SMTP transaction with Python's smtplib (standard library only).

  send.py --port P [--starttls] --from ADDR --to ADDR [--to ADDR ...]
          [--mail-opt OPT ...] [--rcpt-opt OPT ...] --file MESSAGE

Prints the server's EHLO keywords (after STARTTLS if used), each reply, and
exits 0 only if every command got 2xx/3xx. smtplib does the dot-stuffing and
adds a final CRLF when the message lacks one; with SMTPUTF8 among the MAIL
options it sends UTF-8 addresses (smtplib refuses if not advertised).
"""
import argparse
import smtplib
import ssl
import sys

ap = argparse.ArgumentParser()
ap.add_argument("--port", type=int, required=True)
ap.add_argument("--starttls", action="store_true")
ap.add_argument("--from", dest="sender", required=True)
ap.add_argument("--to", action="append", required=True)
ap.add_argument("--mail-opt", action="append", default=[])
ap.add_argument("--rcpt-opt", action="append", default=[])
ap.add_argument("--file", required=True)
a = ap.parse_args()

msg = open(a.file, "rb").read()
s = smtplib.SMTP("127.0.0.1", a.port, local_hostname="py-client.test", timeout=30)
s.ehlo()
if a.starttls:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    code, resp = s.starttls(context=ctx)
    print("STARTTLS", code, resp.decode(errors="replace"))
    s.ehlo()
    print("TLS", s.sock.version(), s.sock.cipher()[0])
print("EHLO", " ".join(sorted(s.esmtp_features)))
ok = True
code, resp = s.mail(a.sender, a.mail_opt)
print("MAIL", code, resp.decode(errors="replace"))
ok &= code == 250
for rcpt in a.to:
    code, resp = s.rcpt(rcpt, a.rcpt_opt)
    print("RCPT", rcpt, code, resp.decode(errors="replace"))
    ok &= code in (250, 251)
code, resp = s.data(msg)
print("DATA", code, resp.decode(errors="replace"))
ok &= code == 250
s.quit()
sys.exit(0 if ok else 1)
