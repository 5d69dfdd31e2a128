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
