#!/usr/bin/env bash
# Usage: scripts/install-system-packages.sh COMMAND:PACKAGE | PACKAGE ...
# Installs each Debian PACKAGE whose COMMAND is not on the PATH yet (a bare PACKAGE is installed
# unless dpkg has it), with apt-get as root (through sudo when not root). `make test`,
# scripts/with-services.sh and scripts/run-demo.sh all install through here.
set -euo pipefail
missing=()
for item in "$@"; do
  case "$item" in
    *:*) command -v "${item%%:*}" >/dev/null || missing+=("${item#*:}") ;;
    *) dpkg-query -W -f='${Status}' "$item" 2>/dev/null | grep -q "install ok installed" || missing+=("$item") ;;
  esac
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "Installing Debian packages: ${missing[*]}" >&2
sudo_cmd=(); [ "$(id -u)" = 0 ] || sudo_cmd=(sudo)
"${sudo_cmd[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
