#!/usr/bin/env bash
# The package test: does an installed attncheck work for a project outside the tree?
#
#   check.sh <attncheck-build-dir> [<work-dir>]
#
# 1. installs attncheck from the (already built) build dir into a fresh prefix (cmake --install);
# 2. configures and builds this example against that prefix, runs its ctest: must pass (it
#    includes read_fixture, which reads a golden fixture linked against attncheck::fixture_format
#    alone);
# 3. rebuilds with -DEXAMPLE_PLANT_BUG=ON: its ctest must fail, and fail as a conformance
#    failure recorded in the JUnit report (not a crash, not a usage error);
# 4. without CMake: builds the kernel and read_fixture with the installed pkg-config files.
# CMake honours CMAKE_GENERATOR from the environment, so the caller picks the generator.
set -euo pipefail

if [[ $# -lt 1 || $# -gt 2 ]]; then
  echo "usage: $0 <attncheck-build-dir> [<work-dir>]" >&2
  exit 2
fi
build=$(cd "$1" && pwd)
work=${2:-$(mktemp -d)}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
rm -rf "$work"
mkdir -p "$work"
prefix="$work/prefix"

step() { printf '\n== %s\n' "$*"; }

step "install attncheck from $build into $prefix"
cmake --install "$build" --prefix "$prefix"

step "configure and build the example against the installed package"
fixture="$here/../../../fixtures/golden/gqa_ratio3_bf16.safetensors"
cmake -S "$here" -B "$work/good" -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_BUILD_TYPE=Release -DEXAMPLE_FIXTURE="$fixture"
cmake --build "$work/good"

step "the example's conformance test and the fixture reader must pass"
ctest --test-dir "$work/good" --output-on-failure --no-tests=error
# The reader's test exists and ran: a package without the format library would have failed the
# configure above, but a test silently not registered would pass unnoticed.
# The listing is captured first: under pipefail, `ctest -N | grep -q` fails whenever grep exits at
# its first match before ctest has finished writing (ctest then dies of SIGPIPE).
registered_tests=$(ctest --test-dir "$work/good" -N)
grep -q 'read_fixture' <<<"$registered_tests" ||
  { echo "check.sh: FAILED: the read_fixture test was not registered" >&2; exit 1; }

step "rebuild with the planted bug"
cmake -S "$here" -B "$work/bug" -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_BUILD_TYPE=Release -DEXAMPLE_PLANT_BUG=ON
cmake --build "$work/bug"

step "its conformance test must fail"
if ctest --test-dir "$work/bug" --output-on-failure --no-tests=error >"$work/bug-ctest.log" 2>&1; then
  cat "$work/bug-ctest.log"
  echo "check.sh: FAILED: the kernel with the planted causal bug passed its conformance test" >&2
  exit 1
fi
junit="$work/bug/naive_kernel_conformance.junit.xml"
if ! grep -q '<failure ' "$junit" 2>/dev/null; then
  cat "$work/bug-ctest.log"
  echo "check.sh: FAILED: the planted-bug test failed, but $junit records no conformance failure" >&2
  exit 1
fi
grep -B1 '<failure ' "$junit" | grep -o 'testcase name="[^"]*" classname="[^"]*"' | sed 's/^/caught by: /'

step "without CMake: compile the kernel with pkg-config's flags and run it by path"
PKG_CONFIG_PATH="$prefix/lib/pkgconfig" pkg-config --cflags attncheck
# shellcheck disable=SC2046
c++ -std=c++20 -O2 -shared -fPIC -fvisibility=hidden $(PKG_CONFIG_PATH="$prefix/lib/pkgconfig" pkg-config --cflags attncheck) \
  "$here/naive_kernel.cpp" -o "$work/libnaive_kernel_pc.so"
"$prefix/bin/attncheck" run --backend "$work/libnaive_kernel_pc.so" --profile quick --property '^reference-agreement$' \
  --dtype f32 --require-backend

step "without CMake: build read_fixture with attncheck-fixture-format's pkg-config flags and run it"
# shellcheck disable=SC2046
c++ -std=c++20 -O2 $(PKG_CONFIG_PATH="$prefix/lib/pkgconfig" pkg-config --cflags attncheck-fixture-format) \
  "$here/read_fixture.cpp" -o "$work/read_fixture_pc" \
  $(PKG_CONFIG_PATH="$prefix/lib/pkgconfig" pkg-config --libs attncheck-fixture-format)
"$work/read_fixture_pc" "$fixture"

printf '\ncheck.sh: passed (installed package works; the planted bug is caught)\n'
