#!/usr/bin/env bash
# scripts/third-party.sh refuses what the lock does not pin, without the network: a cached file
# whose SHA-256 differs from the lock (the error names the file and both hashes), a file that is
# not cached, and a package the script has no unpacking rule for. The hashes expected here are
# computed by sha256sum from the files this test writes.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/downloads"
export ATTNCHECK_DOWNLOAD_CACHE=$work/downloads ATTNCHECK_THIRD_PARTY_DIR=$work/tree ATTNCHECK_THIRD_PARTY_LOCK=$work/lock
fail() { echo "FAILED: $*" >&2; exit 1; }

printf 'not the pinned wheel\n' >"$work/downloads/pinned-1.0-py3-none-any.whl"
actual=$(sha256sum "$work/downloads/pinned-1.0-py3-none-any.whl" | cut -d' ' -f1)
pinned=0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
echo "torch 1.0 pinned-1.0-py3-none-any.whl $pinned torch/" >"$work/lock"
if output=$("$root/scripts/third-party.sh" --check 2>&1); then fail "a wrong hash was accepted"; fi
[[ $output == *"pinned-1.0-py3-none-any.whl: SHA-256 mismatch: the lock says $pinned, the cached file has $actual"* ]] ||
  fail "the mismatch error does not name the file and both hashes: $output"

echo "torch 1.0 absent-1.0-py3-none-any.whl $pinned torch/" >"$work/lock"
if output=$("$root/scripts/third-party.sh" --check 2>&1); then fail "a missing file was accepted"; fi
[[ $output == *"absent-1.0-py3-none-any.whl: not in $work/downloads"* ]] || fail "the missing file is not named: $output"

# A cached file with the right hash passes the check and reaches unpacking, which --check only
# verifies: nothing was unpacked yet, and that is what it says.
echo "torch 1.0 pinned-1.0-py3-none-any.whl $actual torch/" >"$work/lock"
if output=$("$root/scripts/third-party.sh" --check 2>&1); then fail "--check accepted an unpacked tree that does not exist"; fi
[[ $output == *"$work/tree/torch: not unpacked"* ]] || fail "the missing tree is not named: $output"

echo "mystery 1.0 pinned-1.0-py3-none-any.whl $actual mystery/" >"$work/lock"
if output=$("$root/scripts/third-party.sh" 2>&1); then fail "a package without an unpacking rule was accepted"; fi
[[ $output == *"no unpacking rule for 'mystery'"* ]] || fail "the unknown package is not named: $output"

ATTNCHECK_THIRD_PARTY=OFF "$root/scripts/third-party.sh" >"$work/off.out" 2>/dev/null
[[ ! -s $work/off.out ]] || fail "ATTNCHECK_THIRD_PARTY=OFF printed a folder: $(cat "$work/off.out")"
echo "acquisition: passed"
