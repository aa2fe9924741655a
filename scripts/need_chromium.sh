#!/usr/bin/env bash
# The browser tests drive Debian's chromium through Playwright (no browser download).
# Installs it with apt-get when missing and running as root; otherwise names the command.
set -euo pipefail
for b in chromium chromium-browser; do
  if command -v "$b" >/dev/null 2>&1; then exit 0; fi
done
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing chromium for the browser tests (apt-get install -y chromium)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  exit 0
fi
echo "the browser tests need Debian's chromium: run  sudo apt-get install -y chromium  and then make test again" >&2
exit 1
