#!/usr/bin/env bash
# Debian packages the project runs: wsclean (the second imaging backend), chromium (the
# headless browser the web page is tested in), systemd-analyze and logrotate (the service's
# unit files and log rotation are checked with them). Installed with apt-get when missing; nothing
# is done when they are there already.
set -euo pipefail

missing=()
command -v wsclean > /dev/null || missing+=(wsclean)
command -v chromium > /dev/null || missing+=(chromium)
command -v systemd-analyze > /dev/null || missing+=(systemd)
[ -x /usr/sbin/logrotate ] || missing+=(logrotate)
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -eq 0 ]; then
    apt=(apt-get)
elif command -v sudo > /dev/null; then
    apt=(sudo apt-get)
else
    echo "system-packages: need root (or sudo) to install: ${missing[*]}" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
echo "system-packages: installing ${missing[*]}"
if ! "${apt[@]}" install -y -q --no-install-recommends "${missing[@]}" > /dev/null; then
    "${apt[@]}" update -q > /dev/null
    "${apt[@]}" install -y -q --no-install-recommends "${missing[@]}" > /dev/null
fi
