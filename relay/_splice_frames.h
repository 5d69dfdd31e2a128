/*
 * The native splice's frame rewriter: the data-frame path of relay.hybrid.frames.FrameRelay, without I/O.
 *
 * Client frames arrive masked; frames to a client must not be. Each read is rewritten in place: an
 * unmasked header is four bytes shorter than the masked one it replaces, so the output never overtakes
 * the input. Anything that is not a well-formed data frame is left for Python (see _splice_pump.c).
 */
#ifndef RELAY_SPLICE_FRAMES_H
#define RELAY_SPLICE_FRAMES_H

#include <stddef.h>
#include <stdint.h>

#define SPLICE_HEADROOM 16 /* in front of each read: room for a held partial header */
#define SPLICE_MAX_HELD 14 /* longer than any partial data-frame header (at most 13 bytes) */

/* Where the rewriter is in one leg's byte stream: FrameRelay's state. */
typedef struct {
    uint64_t remaining;                  /* payload bytes of the current data frame still to come */
    unsigned char mask[4];               /* that frame's masking key */
    unsigned offset;                     /* index into the key of the next payload byte, 0-3 */
    int in_message;                      /* a fragmented data message is open */
    unsigned char held[SPLICE_MAX_HELD]; /* the start of a header whose rest has not arrived */
    unsigned held_len;
} FrameState;

/*
 * The payload length of the frame header at p, with avail bytes there: returns the header's bytes before
 * any masking key (2, 4 or 10), 0 while those have not all arrived, or -1 when the length is not in its
 * shortest form (RFC 6455 section 5.2 requires it; Autobahn and FrameRelay fail such a frame with 1002).
 */
static inline int frame_length(const unsigned char *p, size_t avail, uint64_t *length)
{
    if (avail < 2)
        return 0;
    uint64_t n = p[1] & 0x7F;
    if (n < 126) {
        *length = n;
        return 2;
    }
    int size = n == 126 ? 4 : 10;
    if (avail < (size_t)size)
        return 0;
    n = 0;
    for (int k = 2; k < size; k++)
        n = (n << 8) | p[k];
    if (n < (size == 4 ? 126u : 65536u))
        return -1;
    *length = n;
    return size;
}

/* The bytes of a frame header without masking key for a payload of length (2, 4 or 10: the shortest form). */
static inline size_t header_size(uint64_t length)
{
    return length < 126 ? 2 : length < 65536 ? 4 : 10;
}

/* Write a frame header: first byte, mask bit (0 or 0x80) and length in its shortest form; returns its bytes. */
static inline size_t put_header(unsigned char *out, unsigned char first, unsigned char mask_bit, uint64_t length)
{
    size_t size = header_size(length);
    out[0] = first;
    if (size == 2) {
        out[1] = mask_bit | (unsigned char)length;
    } else if (size == 4) {
        out[1] = mask_bit | 126;
        out[2] = (unsigned char)(length >> 8);
        out[3] = (unsigned char)length;
    } else {
        out[1] = mask_bit | 127;
        for (int k = 0; k < 8; k++)
            out[2 + k] = (unsigned char)(length >> (56 - 8 * k));
    }
    return size;
}

/* Move n bytes from src to dst (dst <= src; the ranges may overlap) and unmask them with key from key[offset]. */
void unmask_move(unsigned char *dst, const unsigned char *src, size_t n, const unsigned char key[4], unsigned offset);

/*
 * Rewrite buf[start:end] in place (the caller has put state->held in front of the new bytes and set
 * held_len to 0). Returns the number of output bytes, written from buf + start. *stop is the position of
 * the first frame left for Python, or end when there is none; a partial header at the end goes to
 * state->held.
 */
size_t splice_rewrite(FrameState *state, unsigned char *buf, size_t start, size_t end, size_t *stop);

#endif
