#!/bin/sh
# Install Debian's CHOLMOD (SuiteSparse's sparse Cholesky, package libcholmod3) for ybROAD's
# imputation solves (src/camanim/road/imputation.py loads it through ctypes).
#
# Idempotent, and never fails the caller: without it camanim solves the same systems with
# SciPy's SuperLU (the same numbers, about 1.6x slower), so when it cannot be installed here
# this says why on one line and exits 0.
set -u

if ldconfig -p 2>/dev/null | grep -q 'libcholmod\.so\.3'; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install_cholmod: apt-get not found; ybROAD solves with SuperLU (install SuiteSparse's CHOLMOD 3 for speed)" >&2
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "install_cholmod: not root; run 'sudo apt-get install libcholmod3' for faster ybROAD solves" >&2
    exit 0
fi

export DEBIAN_FRONTEND=noninteractive
if ! apt-get install -y -qq --no-install-recommends libcholmod3 >/dev/null 2>&1; then
    # the package lists may be missing or stale on a fresh machine
    if ! apt-get update -qq >/dev/null 2>&1 \
        || ! apt-get install -y -qq --no-install-recommends libcholmod3 >/dev/null 2>&1; then
        echo "install_cholmod: apt-get install libcholmod3 failed; ybROAD solves with SuperLU" >&2
    fi
fi
exit 0
