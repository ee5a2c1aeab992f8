#!/usr/bin/env bash
# Fetches the third-party kernels under test (backends/third-party/packages.lock): downloads each
# pinned file with pip into the cache, checks its SHA-256 against the lock, unpacks the parts the
# adapters link, and builds ggml from its source tree. Prints the cache folder, which CMake takes
# as ATTNCHECK_THIRD_PARTY_DIR.
#
#   scripts/third-party.sh            fetch what is missing (idempotent; a second run does nothing)
#   scripts/third-party.sh --check    only check what is cached against the lock; download nothing
#
# Two folders. The verified downloads are kept per user, in $ATTNCHECK_DOWNLOAD_CACHE (default
# ~/.cache/attncheck/downloads), so a fresh clone on the same machine fetches nothing: every file
# is checked against the lock each time it is used, so sharing it between clones is safe. What
# is unpacked and built from them goes to $ATTNCHECK_THIRD_PARTY_DIR (default .third-party/ in
# the repository, git-ignored).
# ATTNCHECK_THIRD_PARTY=OFF skips everything (prints nothing). Python is used for pip only: the
# adapters are C++ and never load it.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
lock=${ATTNCHECK_THIRD_PARTY_LOCK:-$root/backends/third-party/packages.lock}
cache=${ATTNCHECK_THIRD_PARTY_DIR:-$root/.third-party}
downloads=${ATTNCHECK_DOWNLOAD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/attncheck/downloads}
check_only=0
[[ ${1:-} == --check ]] && check_only=1

if [[ ${ATTNCHECK_THIRD_PARTY:-AUTO} == OFF ]]; then
  echo "third-party: ATTNCHECK_THIRD_PARTY=OFF, nothing fetched" >&2
  exit 0
fi

say() { echo "third-party: $*" >&2; }
die() { echo "third-party: error: $*" >&2; exit 1; }

mkdir -p "$cache" "$downloads"
python=""
pip_download() {  # <name>==<version> <is-wheel> <destination> <file>
  if [[ -z $python ]]; then python=$("$root/scripts/python-env.sh"); fi
  if [[ $2 == 0 ]]; then
    # pip download prepares an sdist's metadata, installing its build backend first (about a
    # minute for ggml-python); the file itself is all we need, so it is taken from the index page
    # pip reads (PEP 503 simple API). The hash is checked below either way.
    "$python" - "${1%%==*}" "$3" "$4" <<'PY'
import os, re, sys, urllib.request
name, destination, filename = sys.argv[1:]
with urllib.request.urlopen(f"https://pypi.org/simple/{name}/", timeout=180) as r:
    page = r.read().decode()
links = [u for u in re.findall(r'href="([^"]+)"', page) if u.split("#")[0].endswith("/" + filename)]
if not links:
    sys.exit(f"{name}: the index lists no file {filename}")
with urllib.request.urlopen(links[0].split("#")[0], timeout=180) as r, \
        open(os.path.join(destination, filename), "wb") as out:
    out.write(r.read())
PY
    return
  fi
  # The platform is named, not inferred from this Python, so every machine gets the same file.
  "$python" -m pip download --quiet --no-deps --disable-pip-version-check --only-binary=:all: \
    --python-version 3.11 --platform manylinux_2_28_x86_64 --platform manylinux_2_25_x86_64 \
    --platform manylinux_2_17_x86_64 --dest "$3" "$1" >&2
}

# fetch <name> <version> <file> <sha256>: the verified download's path in $fetched.
fetch() {
  local name=$1 version=$2 file=$3 want=$4 path=$downloads/$3 got
  if [[ -f $path ]]; then
    got=$(sha256sum "$path" | cut -d' ' -f1)
    [[ $got == "$want" ]] && { fetched=$path; return; }
    ((check_only)) && die "$file: SHA-256 mismatch: the lock says $want, the cached file has $got"
    say "$file: cached file has SHA-256 $got, the lock says $want; downloading it again"
    rm -f "$path"
  fi
  ((check_only)) && die "$file: not in $downloads (run scripts/third-party.sh)"
  local wheel=1 staging
  [[ $file == *.whl ]] || wheel=0
  staging=$(mktemp -d "$downloads/.staging.XXXXXX")
  local started=$SECONDS
  if ! pip_download "$name==$version" "$wheel" "$staging" "$file"; then
    rm -rf "$staging"; die "$name==$version: pip download failed (is PyPI reachable?)"
  fi
  if [[ ! -f $staging/$file ]]; then
    local saved; saved=$(ls "$staging" | tr '\n' ' ')
    rm -rf "$staging"; die "$name==$version: pip saved '${saved% }', the lock expects '$file'"
  fi
  got=$(sha256sum "$staging/$file" | cut -d' ' -f1)
  if [[ $got != "$want" ]]; then
    rm -rf "$staging"; die "$file: SHA-256 mismatch: the lock says $want, the download has $got"
  fi
  mv "$staging/$file" "$path"
  rm -rf "$staging"
  say "$file: downloaded and verified ($(du -h "$path" | cut -f1), $((SECONDS - started)) s)"
  fetched=$path
}

# unpack <archive> <destination> <sha256> <member-pattern>...: once per archive hash.
unpack() {
  local archive=$1 destination=$2 sha=$3
  shift 3
  [[ -f $destination/.unpacked-$sha ]] && return
  ((check_only)) && die "$destination: not unpacked (run scripts/third-party.sh)"
  rm -rf "$destination"
  mkdir -p "$destination"
  if [[ $archive == *.whl ]]; then
    "${python:-$("$root/scripts/python-env.sh")}" - "$archive" "$destination" "$@" <<'PY'
import fnmatch, sys, zipfile
archive, destination, patterns = sys.argv[1], sys.argv[2], sys.argv[3:]
with zipfile.ZipFile(archive) as wheel:
    members = [m for m in wheel.infolist() if any(fnmatch.fnmatch(m.filename, p) for p in patterns)]
    for member in members:
        path = wheel.extract(member, destination)
        mode = member.external_attr >> 16
        if mode:
            import os
            os.chmod(path, mode & 0o777)
PY
  else
    tar xzf "$archive" -C "$destination" --strip-components=1
  fi
  touch "$destination/.unpacked-$sha"
}

build_ggml() {  # <source> <sha256>
  local source=$1/vendor/ggml sha=$2 build=$cache/ggml/build install=$cache/ggml/install
  [[ -f $install/.built-$sha ]] && return
  ((check_only)) && die "ggml: not built (run scripts/third-party.sh)"
  command -v cmake >/dev/null || die "ggml: cmake is missing (run scripts/install-deps.sh first)"
  local started=$SECONDS generator=()
  command -v ninja >/dev/null && generator=(-G Ninja)
  rm -rf "$build" "$install"
  # Shared libraries, OpenMP off (ggml's own thread pool), tuned for this CPU as a local build of
  # llama.cpp is: the kernel users run. Tests and examples are not ours to build.
  cmake -S "$source" -B "$build" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=ON \
    -DGGML_BUILD_TESTS=OFF -DGGML_BUILD_EXAMPLES=OFF -DGGML_NATIVE=ON -DGGML_OPENMP=OFF \
    -DCMAKE_INSTALL_PREFIX="$install" -DCMAKE_INSTALL_LIBDIR=lib >"$cache/ggml/configure.log" 2>&1 ||
    die "ggml: configure failed, see $cache/ggml/configure.log"
  cmake --build "$build" --parallel "$(nproc)" >"$cache/ggml/build.log" 2>&1 ||
    die "ggml: build failed, see $cache/ggml/build.log"
  cmake --install "$build" >>"$cache/ggml/build.log" 2>&1 || die "ggml: install failed, see $cache/ggml/build.log"
  touch "$install/.built-$sha"
  say "ggml: built in $((SECONDS - started)) s"
}

while read -r name version file sha _; do
  [[ -z $name || $name == \#* ]] && continue
  fetch "$name" "$version" "$file" "$sha"
  case $name in
    torch) unpack "$fetched" "$cache/torch" "$sha" 'torch/include/*' 'torch/lib/*' 'torch/share/cmake/*' ;;
    nvidia-cuda-runtime | nvidia-cuda-cupti) unpack "$fetched" "$cache/$name" "$sha" 'nvidia/*/lib/*' ;;
    openvino) unpack "$fetched" "$cache/openvino" "$sha" 'openvino/libs/*' 'openvino/include/*' 'openvino/cmake/*' ;;
    ggml-python)
      unpack "$fetched" "$cache/ggml/src" "$sha"
      build_ggml "$cache/ggml/src" "$sha" ;;
    *) die "packages.lock: no unpacking rule for '$name' (add one to scripts/third-party.sh)" ;;
  esac
done <"$lock"

echo "$cache"
