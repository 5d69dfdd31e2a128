#!/usr/bin/env bash
# Build the libFuzzer target for the native frame rewriter, with AddressSanitizer and UBSan:
#   tests/fuzz/native/build.sh [output directory]      (default: /tmp/relay-fuzz/native)
# then run it, for example for five minutes on the committed seeds (see docs/fuzzing.md):
#   /tmp/relay-fuzz/native/fuzz_splice_rewrite -max_total_time=300 -artifact_prefix=/tmp/relay-fuzz/native/ \
#       /tmp/relay-fuzz/native/corpus tests/fuzz/native/corpus
# Needs clang with libFuzzer (Debian: apt-get install clang). Nothing is written into the checkout.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
out=${1:-${RELAY_FUZZ_DIR:-/tmp/relay-fuzz}/native}
mkdir -p "$out/corpus"
clang -g -O1 -std=c11 -Wall -Wextra -Werror \
    -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer \
    -I "$root/relay" \
    "$here/fuzz_splice_rewrite.c" "$root/relay/_splice_frames.c" \
    -o "$out/fuzz_splice_rewrite"
echo "$out/fuzz_splice_rewrite"
