#!/usr/bin/env bash
# Installs what building and testing regionstore needs on a Debian machine, and only that:
#   - libclang, which RocksDB's bindings (bindgen, through clang-sys) load at build time;
#   - a C and a C++ compiler, which build RocksDB's C++;
#   - cargo-nextest is optional (`make test` falls back to `cargo test`): only a note.
# Quiet when nothing is missing. Never relies on /sbin being on PATH (no ldconfig).
#
# The search can be pointed elsewhere, which is how its test exercises it:
#   DEPS_LIBCLANG_DIRS  colon-separated directories to search for libclang, instead of the
#                       places clang-sys searches
#   DEPS_DRY_RUN=1      print "would install: PKG..." instead of installing
#   CC, CXX             the compilers to look for (default cc and c++, as the cc crate does)
set -euo pipefail

missing=()

# clang-sys loads a file named libclang.so, libclang-*.so, libclang.so.* or libclang-*.so.*,
# never libclang-cpp (the C++ API library, which other packages pull in on their own).
is_libclang_name() {
    case "$1" in
        *-cpp.*) return 1 ;;
        libclang.so | libclang-*.so | libclang.so.* | libclang-*.so.*) return 0 ;;
        *) return 1 ;;
    esac
}

# libclang finds its builtin headers (stddef.h, ...) in clang/<version>/include beside the
# library (as found, or where its links lead); without them bindgen fails on RocksDB's c.h.
# Debian ships them in libclang-common-*-dev, which the runtime library alone does not pull in.
has_builtin_headers() {
    local dir
    for dir in "$(dirname "$1")" "$(dirname "$(readlink -f "$1")")"; do
        compgen -G "$dir/clang/*/include/stddef.h" >/dev/null && return 0
    done
    return 1
}

libclang_dirs() {
    if [ -n "${DEPS_LIBCLANG_DIRS:-}" ]; then
        tr ':' '\n' <<<"$DEPS_LIBCLANG_DIRS"
        return
    fi
    # The places clang-sys looks, in its order.
    if [ -n "${LIBCLANG_PATH:-}" ]; then
        if [ -f "$LIBCLANG_PATH" ]; then dirname "$LIBCLANG_PATH"; else echo "$LIBCLANG_PATH"; fi
    fi
    local llvm_config=${LLVM_CONFIG_PATH:-llvm-config}
    if command -v "$llvm_config" >/dev/null 2>&1; then
        "$llvm_config" --libdir 2>/dev/null || true
    fi
    tr ':' '\n' <<<"${LD_LIBRARY_PATH:-}"
    local d
    for d in /usr/lib/llvm-*/lib /usr/local/llvm*/lib /usr/lib*/ /usr/lib/*-linux-gnu /usr/local/lib; do
        echo "$d"
    done
}

has_libclang() {
    local dir f
    while IFS= read -r dir; do
        [ -n "$dir" ] && [ -d "$dir" ] || continue
        for f in "$dir"/libclang*; do
            [ -e "$f" ] || continue
            if is_libclang_name "$(basename "$f")" && has_builtin_headers "$f"; then
                return 0
            fi
        done
    done < <(libclang_dirs)
    return 1
}

has_libclang || missing+=(libclang-dev)
command -v "${CC:-cc}" >/dev/null 2>&1 || missing+=(gcc)
command -v "${CXX:-c++}" >/dev/null 2>&1 || missing+=(g++)

if [ "${#missing[@]}" -gt 0 ]; then
    if [ "${DEPS_DRY_RUN:-0}" = 1 ]; then
        echo "would install: ${missing[*]}"
    else
        echo "installing ${missing[*]} (needed to build RocksDB)"
        sudo=()
        [ "$(id -u)" = 0 ] || sudo=(sudo)
        "${sudo[@]}" apt-get update -qq
        DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
        if ! has_libclang; then
            echo "error: libclang is still not found after installing ${missing[*]}" >&2
            exit 1
        fi
    fi
fi

if ! command -v cargo-nextest >/dev/null 2>&1; then
    echo "note: cargo-nextest not found; tests run with cargo test (cargo install cargo-nextest --locked for nextest)"
fi
