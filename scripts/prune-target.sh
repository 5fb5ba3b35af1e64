#!/usr/bin/env bash
# Keeps a persistent target dir (CI's, under ~/.cache) from growing without bound. Every time a
# test binary is rebuilt under a new hash (a dependency's features changed, say) the old one
# (~0.7 GB with debuginfo) stays behind, and rustc's incremental caches pile up: one machine's
# target dir reached 80 GB and filled its disk. This removes, under $CARGO_TARGET_DIR (or
# ./target):
#   - in debug/deps and release/deps, every executable but the newest of each name (test and
#     bench binaries are `<name>-<hash>`, no extension; libraries and dep files are left
#     alone; a release bench binary is about 0.5 GB);
#   - incremental-compilation directories not touched for more than a day.
# Cargo rebuilds whatever it still needs; nothing here is ever the only copy of anything.
set -euo pipefail

target="${CARGO_TARGET_DIR:-target}"
[ -d "$target" ] || exit 0

removed=0
for deps in "$target/debug/deps" "$target/release/deps"; do
    [ -d "$deps" ] || continue
    declare -A kept=()
    # Newest first, so the first executable seen of each name is the one kept.
    while IFS= read -r path; do
        base="${path##*/}"
        name="${base%-*}"
        if [ -n "${kept[$name]:-}" ]; then
            rm -f -- "$path" "$path.d"
            removed=$((removed + 1))
        else
            kept[$name]=1
        fi
    done < <(find "$deps" -maxdepth 1 -type f -perm -u+x ! -name '*.*' -printf '%T@ %p\n' \
        | sort -rn | cut -d' ' -f2-)
    unset kept
done

if [ -d "$target/debug/incremental" ]; then
    find "$target/debug/incremental" -mindepth 1 -maxdepth 1 -type d -mtime +1 \
        -exec rm -rf -- {} +
fi
if [ "$removed" -gt 0 ]; then
    echo "prune-target: removed $removed stale test and bench binaries from $target"
fi
