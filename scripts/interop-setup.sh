#!/usr/bin/env bash
# Installs the peers that tests/interop.rs starts for real (idempotent).
#
#   scripts/interop-setup.sh        # as root, on Debian 12 (bookworm)
#
# - Postfix 3.7 (postfix, postfix-pcre), swaks, openssl, python3: ordinary
#   packages. Postfix is installed with "No configuration": no system
#   instance runs; every test starts its own instance from a private
#   config_directory/queue_directory in a fresh temporary directory.
# - Exim (exim4-daemon-light) and OpenSMTPD both Conflict with postfix (all
#   three Provide mail-transport-agent), so they are NOT dpkg-installed:
#   `apt-get download` fetches the Debian .deb and `dpkg-deb -x` unpacks it
#   under $MX2_INTEROP_ROOT (default /tmp/mx2-interop):
#       $MX2_INTEROP_ROOT/exim-root/usr/sbin/exim4
#       $MX2_INTEROP_ROOT/opensmtpd-root/usr/sbin/smtpd
#   Their shared-library dependencies (read from the .deb's Depends) are
#   apt-installed (plain libraries, no conflict), and the system users their
#   postinst scripts would create are created: Debian-exim (exim's compiled-in
#   exim_user), opensmtpd and opensmtpq. Nothing else of the system is
#   touched: the tests run Exim with `-C FILE` (spool, logs, pid under the
#   test's temp dir; exim_path points at the unpacked binary), and OpenSMTPD
#   in a private mount namespace whose /var/spool, /var/lib and /run are
#   bind mounts of directories in the test's temp dir.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
ROOT=${MX2_INTEROP_ROOT:-/tmp/mx2-interop}

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

updated=0
apt_install() {
  local missing=() p
  for p in "$@"; do installed "$p" || missing+=("$p"); done
  ((${#missing[@]})) || return 0
  if ((updated == 0)); then apt-get update -qq; updated=1; fi
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# Postfix: never configure a system instance.
installed postfix || echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
apt_install postfix postfix-pcre swaks openssl python3 util-linux adduser

# $1 = package, $2 = directory to unpack into, $3 = a file that proves it is done
unpack() {
  local pkg=$1 dest=$2 probe=$3 deb
  mkdir -p "$ROOT/pkgs"
  if [ ! -e "$dest/$probe" ]; then
    ( cd "$ROOT/pkgs"
      rm -f "${pkg}"_*.deb
      if ((updated == 0)); then apt-get update -qq; fi
      # _apt cannot write here; the download then runs unsandboxed (harmless warning)
      apt-get download "$pkg" 2>&1 | grep -v -e unsandboxed -e '^Get:' -e '^Fetched' || true )
    deb=$(ls "$ROOT/pkgs/${pkg}"_*.deb)
    rm -rf "$dest.tmp"; mkdir -p "$dest.tmp"
    dpkg-deb -x "$deb" "$dest.tmp"
    rm -rf "$dest"; mv "$dest.tmp" "$dest"
  fi
  deb=$(ls "$ROOT/pkgs/${pkg}"_*.deb)
  # the libraries it links against: first alternative of each Depends entry,
  # minus the MTA/debconf/maintainer-script packages.
  local deps
  deps=$(dpkg-deb -f "$deb" Depends | tr ',' '\n' | sed -e 's/|.*//' -e 's/(.*)//' -e 's/[[:space:]]//g' |
         grep -v -x -e '' -e 'exim4-base' -e 'debconf' -e 'debconf-2.0' -e 'ed' -e 'lsb-base' -e 'adduser' || true)
  # shellcheck disable=SC2086
  apt_install $deps
}

unpack exim4-daemon-light "$ROOT/exim-root" usr/sbin/exim4
unpack opensmtpd "$ROOT/opensmtpd-root" usr/sbin/smtpd

# The users the packages' postinst scripts would create.
getent group Debian-exim >/dev/null || addgroup --system --quiet --force-badname Debian-exim
id Debian-exim >/dev/null 2>&1 || adduser --system --quiet --force-badname --no-create-home \
    --home /var/spool/exim4 --ingroup Debian-exim --disabled-login Debian-exim
for name in opensmtpd opensmtpq; do
  getent group "$name" >/dev/null || addgroup --system --quiet "$name"
  id "$name" >/dev/null 2>&1 || adduser --system --quiet --no-create-home \
      --home /var/lib/opensmtpd/empty --ingroup "$name" "$name"
done
# exim4 must stay setuid root (dpkg-deb -x keeps the mode; make sure).
chown root:root "$ROOT/exim-root/usr/sbin/exim4"; chmod 4755 "$ROOT/exim-root/usr/sbin/exim4"
# what opensmtpd's postinst does with dpkg-statoverride: smtpctl setgid opensmtpq
chown root:opensmtpq "$ROOT/opensmtpd-root/usr/sbin/smtpctl"; chmod 2755 "$ROOT/opensmtpd-root/usr/sbin/smtpctl"

# Fail here, not in the tests, if a binary cannot run.
v=$("$ROOT/exim-root/usr/sbin/exim4" -C /dev/null -bV 2>/dev/null || true)
case $v in "Exim version"*) echo "interop: ${v%%$'\n'*}";; *) echo "exim4 does not run: $v" >&2; exit 1;; esac
v=$("$ROOT/opensmtpd-root/usr/sbin/smtpd" -h 2>&1 || true)   # -h exits 1 after printing
case $v in *"version: OpenSMTPD"*) echo "interop: $(echo "$v" | sed -n 's/^version: //p')";; *) echo "smtpd does not run: $v" >&2; exit 1;; esac
sw=$(swaks --version 2>/dev/null || true)
echo "interop: postfix $(postconf -d -h mail_version), ${sw%%$'\n'*}, $(python3 --version)"
