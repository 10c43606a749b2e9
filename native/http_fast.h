/* SPDX-License-Identifier: MIT */
/*
 * http_fast.h - the static store (static.c) and the HTTP fast path that
 * answers from it (http_fast.c).
 */
#ifndef SPECLOOP_HTTP_FAST_H
#define SPECLOOP_HTTP_FAST_H

#include <time.h>

#include "http_frame.h"
#include "tcp.h"

#define FAST_MAX_REQUEST 8192	/* bytes of one request the fast path holds */
#define FAST_MAX_PIPELINE 64	/* responses queued on one connection */
#define FAST_MAX_BACKLOG 65536	/* input held while Python has a request */

/* A registered file: its bytes and the header fields of its responses. */
struct static_entry {
	struct static_entry *hnext;
	/* its body as TCP's stored payload; payload.refs: the table's, and
	 * one per response and per send-queue segment */
	struct tcp_payload payload;
	uint16_t port;
	uint32_t flags;		/* SL_STATIC_* */
	char *path;		/* decoded URL path, the key */
	uint32_t path_len;
	uint8_t *body;
	uint32_t size;
	int64_t mtime_ns;
	char *etag;		/* without quotes */
	char *last_modified;
	char *fields;		/* Content-Type, Etag, Last-Modified lines */
	uint32_t fields_len;
	char *extra;		/* extra header lines (Cache-Control), or NULL */
	uint32_t extra_len;
	/* a whole 200's header from after "HTTP/1.x " up to "Date: ", made
	 * once: a response copies it instead of formatting it */
	char *head200;
	uint32_t head200_len;
	/* checksum partial sums of the body cut as a 200 response cuts it */
	uint32_t csum_mss, csum_first;
	uint64_t *csums;	/* bit 32 set: computed */
	uint32_t ncsums;
	/* multi-buffer TX: the chunks of that same cut, each in a UMEM frame */
	uint32_t *chunk_frames;	/* SL_NO_FRAME where not (yet) placed */
	uint32_t nchunk_frames;
	/* precompressed siblings (STATIC_VAR_*), entries of their own that
	 * are in no bucket; a variant holds its own reference */
	struct static_entry *variant[2];
	bool is_variant;
};

enum { STATIC_VAR_BR = 0, STATIC_VAR_GZIP = 1 };

struct sl_static {
	struct static_entry **buckets;
	uint32_t count;
	uint64_t bytes;
	uint64_t budget;
	uint32_t keepalive_ms;
	char server[128];
	char reason_416[64];	/* as the Python the app runs on words it */
	char date[32];
	time_t date_sec;
	/* response records of FAST_RESP_BLOCK bytes kept for reuse: one per
	 * request otherwise went to malloc and free, above the size glibc
	 * keeps a per-thread cache of */
	struct fast_resp *spare;
	uint32_t nspare;
};

#define FAST_RESP_BLOCK 2048	/* a record and its head, pooled up to this */
#define FAST_RESP_SPARE 64	/* records kept */

/* One response queued on a fast-path connection, sent lazily. */
struct fast_resp {
	struct fast_resp *next;
	struct static_entry *e;	/* NULL for a header-only response */
	uint8_t *hdr;
	uint32_t hdr_len, hdr_done;
	uint32_t body_next, body_end;
	uint32_t first;		/* body bytes that share the header's segment */
	bool close_after;
	bool pooled;		/* a FAST_RESP_BLOCK record (sl_static.spare) */
};

/* Who has a fast-path connection. */
enum fast_mode {
	FAST_OWN = 0,		/* the fast path: Python does not know it */
	FAST_PYTHON,		/* Python has one request; its answer is framed,
				 * later input waits in req */
	FAST_STUCK,		/* Python's for good (enum hf_stay said why) */
};

struct fast_conn {
	/* input not taken yet: a request not complete yet, or (FAST_PYTHON)
	 * what follows the request Python has, or (FAST_STUCK) what is still
	 * to be given to Python */
	struct byteq req;
	struct fast_resp *head, *tail;
	uint32_t nresp;
	uint8_t mode;		/* enum fast_mode */
	bool handback;		/* its listener lets connections come back */
	bool closing;		/* close once the responses are out */
	bool eof_held;		/* FAST_STUCK: the peer's FIN, after req */
	uint64_t to_python;	/* FAST_PYTHON: body bytes of its request to come */
	struct hf_response *resp;	/* FAST_PYTHON: Python's answer, as framed */
	uint64_t active_us;	/* the last input: keep-alive counts from it */
};

/* static.c */
int static_init(struct sl_engine *eng);
void static_fini(struct sl_engine *eng);
struct static_entry *static_lookup(struct sl_engine *eng, uint16_t port,
				   const char *path, uint32_t len);
void static_entry_put(struct sl_engine *eng, struct static_entry *e);
const char *static_date(struct sl_engine *eng);
uint32_t static_chunk_csum(struct static_entry *e, uint32_t first, uint32_t mss,
			   uint32_t off, uint32_t len);


/* http_fast.c */

/* The fast path as TCP's application (struct tcp_app of tcp.h). */
extern const struct tcp_app http_fast_app;

#endif /* SPECLOOP_HTTP_FAST_H */
