/* SPDX-License-Identifier: MIT */
/*
 * http_frame.h - HTTP/1.1 message framing (RFC 9112 §6.3): where a request
 * the fast path hands to Python ends, and where Python's response to it
 * ends, so that the connection can come back to the fast path.  Framing
 * only: nothing here interprets what a message means.
 */
#ifndef SPECLOOP_HTTP_FRAME_H
#define SPECLOOP_HTTP_FRAME_H

#include <stdbool.h>
#include <stdint.h>

/* Why a connection stays with Python (each is a counter, fast_stay_*). */
enum hf_stay {
	HF_GO = 0,
	HF_STAY_CLOSE,			/* Connection: close, or HTTP/1.0 without keep-alive */
	HF_STAY_UPGRADE,		/* Upgrade, CONNECT, 101 */
	HF_STAY_REQUEST_CHUNKED,	/* a request body with Transfer-Encoding */
	HF_STAY_REQUEST_UNFRAMED,	/* a request we cannot frame (malformed, huge) */
	HF_STAY_CLOSE_DELIMITED,	/* a response without a length */
	HF_STAY_CL_AND_TE,		/* a response with both */
	HF_STAY_BAD_LENGTH,		/* invalid or repeated Content-Length */
	HF_STAY_BAD_CHUNK,		/* malformed chunked coding */
	HF_STAY_EXTRA_BYTES,		/* more than the response announced */
	HF_STAY_MALFORMED,		/* status line or header fields */
	HF_STAY_OPT_OUT,		/* hand-back is off for the listener */
	HF_STAY_EOF,			/* the peer closed while Python had it */
	HF_STAY_BACKLOG,		/* input piled up while Python had it */
	HF_STAY_COUNT,
};

#define HF_LINE_MAX 8192	/* one status, field or chunk-size line */

/* A request handed to Python, as framed. */
struct hf_request {
	uint32_t hdr_len;	/* request line and fields, the blank line included */
	uint64_t body_len;	/* Content-Length (0 without one) */
	bool head;		/* HEAD: its response has no content */
	bool close;		/* the connection ends after its response */
};

/*
 * Frames the request at buf[0, len), whose header must end within `max`
 * bytes.  Returns its header length (> 0), 0 while the header is
 * incomplete, or -enum hf_stay when it must stay with Python.
 */
int hf_request(const uint8_t *buf, uint32_t len, uint32_t max, struct hf_request *out);

enum hf_state {
	HF_STATUS = 0,		/* reading the status line */
	HF_FIELDS,		/* reading header fields */
	HF_BODY,		/* `left` content bytes to come */
	HF_CHUNK_SIZE,		/* a chunk-size line */
	HF_CHUNK_DATA,		/* `left` bytes of chunk data */
	HF_CHUNK_END,		/* the CRLF after chunk data */
	HF_TRAILER,		/* trailer fields, until the blank line */
	HF_DONE,		/* the final response is complete */
	HF_STAY,		/* cannot tell where it ends: `stay` says why */
};

/* The response Python writes to one request, read as it is written. */
struct hf_response {
	uint8_t state;		/* enum hf_state */
	uint8_t stay;		/* enum hf_stay, in HF_STAY */
	bool head;		/* the request was HEAD */
	bool req_close;		/* the request asked for close */
	uint16_t status;
	uint8_t minor;		/* HTTP/1.<minor> */
	bool close, keepalive;	/* Connection tokens */
	bool te, te_chunked;	/* Transfer-Encoding seen; its last coding is chunked */
	bool cl_bad;
	uint32_t ncl;		/* Content-Length field lines */
	uint64_t cl;
	uint64_t left;
	uint32_t line_len;
	uint8_t line[HF_LINE_MAX];
};

void hf_response_init(struct hf_response *r, bool head, bool req_close);

/* Python queued these bytes (data NULL: `len` bytes of a file, which can
 * only be content).  Returns the state after them. */
int hf_response_feed(struct hf_response *r, const uint8_t *data, uint32_t len);

#endif /* SPECLOOP_HTTP_FRAME_H */
