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
    # The places clang-sys looks, in its order; a set LIBCLANG_PATH is the only place it looks.
    if [ -n "${LIBCLANG_PATH:-}" ]; then
        if [ -f "$LIBCLANG_PATH" ]; then dirname "$LIBCLANG_PATH"; else echo "$LIBCLANG_PATH"; fi
        return
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

# The version in a libclang file's real name (libclang-16.so.16.0.6 -> 16, libclang.so.1 -> 1).
libclang_version() {
    local base
    base=$(basename "$(readlink -f "$1")")
    if [[ $base =~ ^libclang-([0-9][0-9.]*)\.so ]] || [[ $base =~ ^libclang\.so\.([0-9.]+)$ ]]; then
        echo "${BASH_REMATCH[1]%.}"
    else
        echo 0
    fi
}

# clang-sys loads the highest version it finds: that version must come with its headers.
has_libclang() {
    local dir f candidates=() best="" found=1
    while IFS= read -r dir; do
        [ -n "$dir" ] && [ -d "$dir" ] || continue
        for f in "$dir"/libclang*; do
            [ -e "$f" ] && is_libclang_name "$(basename "$f")" && candidates+=("$f")
        done
    done < <(libclang_dirs)
    [ "${#candidates[@]}" -gt 0 ] || return 1
    best=$(for f in "${candidates[@]}"; do libclang_version "$f"; done | sort -V | tail -n 1)
    for f in "${candidates[@]}"; do
        if [ "$(libclang_version "$f")" = "$best" ] && has_builtin_headers "$f"; then
            found=0
        fi
    done
    return "$found"
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
        # dpkg runs ldconfig and start-stop-daemon, which live in the sbin directories.
        "${sudo[@]}" env PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin" apt-get update -qq
        "${sudo[@]}" env PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin" \
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
        if ! has_libclang; then
            echo "error: after installing ${missing[*]}, the newest libclang found still has no" \
                "builtin headers (clang/<version>/include/stddef.h beside it): install that" \
                "version's libclang-common-*-dev, or point LIBCLANG_PATH at a complete one" >&2
            exit 1
        fi
    fi
fi

if ! command -v cargo-nextest >/dev/null 2>&1; then
    echo "note: cargo-nextest not found; tests run with cargo test (cargo install cargo-nextest --locked for nextest)"
fi
