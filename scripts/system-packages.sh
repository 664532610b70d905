#!/usr/bin/env bash
# Debian packages the project runs: wsclean (the second imaging backend) and chromium (the
# headless browser the web page is tested in). Installed with apt-get when missing; nothing
# is done when they are there already.
set -euo pipefail

missing=()
command -v wsclean > /dev/null || missing+=(wsclean)
command -v chromium > /dev/null || missing+=(chromium)
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
