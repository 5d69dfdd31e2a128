/*
 * libFuzzer target for the native splice's frame rewriter (relay/_splice_frames.c, splice_rewrite).
 *
 * The input is a starting state, the sizes of the reads and the client's byte stream (see decode()). The
 * stream is cut into those reads and each goes through splice_rewrite as the pump's readable() does: in a
 * buffer of exactly SPLICE_HEADROOM + the read's size (so that AddressSanitizer sees any write or read
 * outside it), the held partial header copied in front of the new bytes, the FrameState kept from one read
 * to the next, until the rewriter leaves a frame for Python.
 *
 * Checked against a reference decoder that reads the whole stream at once (reference()):
 *   - the output of each read is no longer than its input (it is rewritten in place),
 *   - the outputs joined are exactly the reference's (each frame's header unmasked in its shortest form,
 *     its payload unmasked), whatever the cuts,
 *   - a frame left for Python is left at its first byte, the reference's stop, with nothing held,
 *   - what is held between reads is at most SPLICE_MAX_HELD - 1 bytes, fits the headroom, and is the end
 *     of the stream read so far; the state at the end is the reference's.
 *
 * Build and run: tests/fuzz/native/build.sh (see docs/fuzzing.md).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "_splice_frames.h"

#define MAX_READS 8

#define CHECK(cond, what)                                                                                 \
    do {                                                                                                  \
        if (!(cond)) {                                                                                    \
            fprintf(stderr, "fuzz_splice_rewrite: %s (%s:%d)\n", what, __FILE__, __LINE__);             \
            abort();                                                                                      \
        }                                                                                                 \
    } while (0)

/* The reference: the whole stream at once, frame by frame, the plain way. */
typedef struct {
    unsigned char *out;
    size_t out_len;
    size_t stop;     /* offset of the first frame left for Python, or the stream's length */
    size_t held_at;  /* offset of the partial header at the end (== length when there is none) */
    FrameState end;  /* remaining, mask, offset and in_message after the stream */
} Reference;

static void reference_header(Reference *r, unsigned char b0, uint64_t length)
{
    r->out[r->out_len++] = b0;
    if (length < 126) {
        r->out[r->out_len++] = (unsigned char)length;
    } else if (length < 65536) {
        r->out[r->out_len++] = 126;
        r->out[r->out_len++] = (unsigned char)(length >> 8);
        r->out[r->out_len++] = (unsigned char)(length & 0xFF);
    } else {
        r->out[r->out_len++] = 127;
        for (int k = 7; k >= 0; k--)
            r->out[r->out_len++] = (unsigned char)((length >> (8 * k)) & 0xFF);
    }
}

static void reference(const FrameState *initial, const unsigned char *s, size_t n, Reference *r)
{
    r->out = malloc(n + 1);
    r->out_len = 0;
    r->end = *initial;
    r->stop = n;
    r->held_at = n;
    FrameState *st = &r->end;
    size_t pos = 0;
    for (;;) {
        /* The payload still due from the frame before. */
        while (st->remaining && pos < n) {
            r->out[r->out_len++] = s[pos++] ^ st->mask[st->offset];
            st->offset = (st->offset + 1) % 4;
            st->remaining--;
        }
        if (pos == n)
            return;
        if (n - pos < 2) {
            r->held_at = pos;
            return;
        }
        unsigned char b0 = s[pos], b1 = s[pos + 1];
        int fin = b0 >> 7, rsv = (b0 >> 4) & 7, opcode = b0 & 15, masked = b1 >> 7, len7 = b1 & 127;
        int data = opcode == 1 || opcode == 2, continuation = opcode == 0;
        int fits = masked && !rsv && ((data && !st->in_message) || (continuation && st->in_message));
        if (!fits) {
            r->stop = pos;
            return;
        }
        size_t extra = len7 == 126 ? 2 : len7 == 127 ? 8 : 0;
        if (n - pos < 2 + extra + 4) { /* even a 64-bit length with its top bit set waits for the whole header */
            r->held_at = pos;
            return;
        }
        uint64_t length = len7;
        if (extra) {
            length = 0;
            for (size_t k = 0; k < extra; k++)
                length = length * 256 + s[pos + 2 + k];
        }
        if ((len7 == 127 && (s[pos + 2] & 0x80)) || (len7 == 126 && length < 126) ||
            (len7 == 127 && length < 65536)) { /* top bit set, or a length not in its shortest form */
            r->stop = pos;
            return;
        }
        memcpy(st->mask, s + pos + 2 + extra, 4);
        st->offset = 0;
        st->in_message = !fin;
        st->remaining = length;
        reference_header(r, b0, length);
        pos += 2 + extra + 4;
    }
}

/*
 * Input layout: byte 0 says the starting state (bit 0 in_message, bit 1 mid-payload, bits 2-3 the key
 * offset) and bits 4-6 how many read sizes follow; when mid-payload, 1 byte of payload still due and 4 of
 * mask follow; then one byte per read size (0 means 1, otherwise the byte, times 16 when bit 7 of byte 0
 * is set); the rest is the stream. The sizes repeat until the stream is used up.
 */
static size_t decode(const uint8_t *data, size_t size, FrameState *state, size_t sizes[MAX_READS],
                     size_t *n_sizes)
{
    memset(state, 0, sizeof *state);
    *n_sizes = 0;
    if (size < 1)
        return 0;
    uint8_t flags = data[0];
    size_t pos = 1;
    state->in_message = flags & 1;
    if ((flags & 2) && size - pos >= 5) {
        state->remaining = data[pos] ? data[pos] : 70000; /* 0: a payload longer than 16 bits */
        memcpy(state->mask, data + pos + 1, 4);
        state->offset = (flags >> 2) & 3;
        pos += 5;
    }
    size_t count = ((flags >> 4) & 7) + 1;
    for (size_t k = 0; k < count && pos < size; k++, pos++) {
        size_t v = data[pos] ? data[pos] : 1;
        sizes[(*n_sizes)++] = (flags & 0x80) ? v * 16 : v;
    }
    if (*n_sizes == 0)
        sizes[(*n_sizes)++] = 1;
    return pos;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    FrameState state;
    size_t sizes[MAX_READS], n_sizes;
    size_t at = decode(data, size, &state, sizes, &n_sizes);
    const unsigned char *stream = data + at;
    size_t n = size - at;

    Reference ref;
    reference(&state, stream, n, &ref);

    unsigned char *out = malloc(n + 1);
    size_t out_len = 0;
    size_t consumed = 0; /* stream bytes handed to reads so far */
    size_t stopped_at = n;
    int stopped = 0;
    for (size_t read = 0; consumed < n; read++) {
        size_t got = sizes[read % n_sizes];
        if (got > n - consumed)
            got = n - consumed;
        /* Exactly what the pump has: headroom, then the read. */
        unsigned char *buf = malloc(SPLICE_HEADROOM + got);
        CHECK(state.held_len < SPLICE_MAX_HELD && state.held_len <= SPLICE_HEADROOM, "held too much");
        size_t start = SPLICE_HEADROOM - state.held_len;
        memcpy(buf + start, state.held, state.held_len);
        memcpy(buf + SPLICE_HEADROOM, stream + consumed, got);
        size_t base = consumed - state.held_len; /* the stream offset of buf[start] */
        size_t end = SPLICE_HEADROOM + got, stop;
        state.held_len = 0;
        size_t written = splice_rewrite(&state, buf, start, end, &stop);
        CHECK(stop >= start && stop <= end, "stop outside the read");
        CHECK(written <= end - start, "output longer than input");
        if (stop < end)
            CHECK(written <= stop - start, "output overtook the frame left for Python");
        memcpy(out + out_len, buf + start, written);
        out_len += written;
        consumed += got;
        free(buf);
        if (stop < end) {
            stopped = 1;
            stopped_at = base + (stop - start);
            CHECK(state.held_len == 0, "held bytes beside a frame left for Python");
            break;
        }
        CHECK(state.held_len < SPLICE_MAX_HELD, "held a whole header");
        CHECK(memcmp(state.held, stream + consumed - state.held_len, state.held_len) == 0,
              "held bytes are not the end of the stream");
    }

    if (stopped) {
        CHECK(stopped_at == ref.stop, "left for Python at another offset than the reference");
        CHECK(out_len == ref.out_len && memcmp(out, ref.out, out_len) == 0, "output differs before the stop");
    } else {
        CHECK(ref.stop == n, "the reference left a frame for Python, the rewriter did not");
        CHECK(out_len == ref.out_len, "output length differs from the reference");
        CHECK(memcmp(out, ref.out, out_len) == 0, "output differs from the reference");
        CHECK(state.held_len == n - ref.held_at, "held a different partial header");
        CHECK(state.remaining == ref.end.remaining, "remaining differs");
        CHECK(state.in_message == ref.end.in_message, "in_message differs");
        if (state.remaining)
            CHECK(memcmp(state.mask, ref.end.mask, 4) == 0 && state.offset == ref.end.offset, "key differs");
    }
    free(out);
    free(ref.out);
    return 0;
}
