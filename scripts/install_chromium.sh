#!/bin/sh
# Install Debian's chromium for the browser tests (tests/report/test_page_browser.py).
#
# Idempotent, and never fails the caller: when chromium cannot be installed here
# it says why on one line and exits 0, so the browser tests skip with a reason
# instead of a setup script breaking the whole test run.
# Playwright drives this system chromium; we never run `playwright install`,
# which would download a browser from outside the package archives.
set -u

CHROMIUM=/usr/bin/chromium

if [ -x "$CHROMIUM" ]; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install_chromium: apt-get not found; install chromium by hand to run the browser tests" >&2
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "install_chromium: not root; run 'sudo apt-get install chromium' to run the browser tests" >&2
    exit 0
fi

export DEBIAN_FRONTEND=noninteractive
if ! apt-get update -qq >/dev/null 2>&1; then
    echo "install_chromium: apt-get update failed (offline?); browser tests will skip" >&2
    exit 0
fi
if ! apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null 2>&1; then
    echo "install_chromium: apt-get install chromium failed; browser tests will skip" >&2
    exit 0
fi
if [ ! -x "$CHROMIUM" ]; then
    echo "install_chromium: chromium package installed but $CHROMIUM is missing; browser tests will skip" >&2
fi
exit 0
