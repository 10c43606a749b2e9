/* SPDX-License-Identifier: MIT */
/*
 * static.c - the store of static files the fast path serves.
 *
 * Python registers each file once (and again when it changes): its bytes,
 * and the header fields aiohttp's FileResponse would send for it.  An entry
 * is found by (port, decoded URL path).  Entries are reference counted: a
 * response being sent keeps its entry alive even if the file is replaced or
 * removed meanwhile, so a segment retransmitted later resends the very
 * bytes it first carried.
 *
 * The body is kept as pre-segmented payload: for the segment size of a
 * connection and the length of the 200 header, the checksum partial sum of
 * every body chunk is computed once (lazily, per layout) and reused by every
 * response and retransmission.
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "tcp.h"
#include "http_fast.h"

#define STATIC_BUCKETS 4096

static void entry_payload_put(struct sl_engine *eng, struct tcp_payload *p);
static uint32_t entry_payload_frame(struct sl_engine *eng, struct tcp_payload *p,
				    uint32_t first, uint32_t mss, uint32_t off, uint32_t len);

static uint32_t path_hash(const struct sl_engine *eng, uint16_t port,
			  const char *path, uint32_t len)
{
	uint64_t h = siphash13(eng->tcp->key, path, len);

	return (uint32_t)(h ^ port) & (STATIC_BUCKETS - 1);
}

int static_init(struct sl_engine *eng)
{
	struct sl_static *s = calloc(1, sizeof(*s));

	if (!s)
		return -ENOMEM;
	s->buckets = calloc(STATIC_BUCKETS, sizeof(*s->buckets));
	if (!s->buckets) {
		free(s);
		return -ENOMEM;
	}
	snprintf(s->server, sizeof(s->server), "specloop");
	snprintf(s->reason_416, sizeof(s->reason_416), "Requested Range Not Satisfiable");
	eng->stat = s;
	return 0;
}

/* Gives a file's UMEM chunks back (at their TX completion if in flight). */
static void chunks_release(struct sl_engine *eng, struct static_entry *e)
{
	struct sl_xsk *x = &eng->xsk;
	uint32_t k;

	for (k = 0; k < e->nchunk_frames; k++) {
		uint32_t f = e->chunk_frames[k];

		if (f == SL_NO_FRAME)
			continue;
		if (x->meta[f].tx_pending)
			x->meta[f].dead = 1;
		else
			xsk_frame_free(x, f);
	}
	free(e->chunk_frames);
	e->chunk_frames = NULL;
	e->nchunk_frames = 0;
}

static void entry_free(struct static_entry *e)
{
	free(e->body);
	free(e->path);
	free(e->fields);
	free(e->etag);
	free(e->last_modified);
	free(e->csums);
	free(e->extra);
	free(e->head200);
	free(e);
}

void static_entry_put(struct sl_engine *eng, struct static_entry *e)
{
	int k;

	if (--e->payload.refs)
		return;
	if (eng->stat)
		eng->stat->bytes -= e->size;
	/* its variants go with it (a response of one holds that one) */
	for (k = 0; k < 2; k++)
		if (e->variant[k])
			static_entry_put(eng, e->variant[k]);
	chunks_release(eng, e);
	entry_free(e);
}

void static_fini(struct sl_engine *eng)
{
	struct sl_static *s = eng->stat;
	uint32_t i;

	if (!s)
		return;
	for (i = 0; i < STATIC_BUCKETS; i++) {
		struct static_entry *e = s->buckets[i], *n;

		for (; e; e = n) {
			n = e->hnext;
			e->hnext = NULL;
			static_entry_put(eng, e);
		}
	}
	while (s->spare) {
		struct fast_resp *fr = s->spare;

		s->spare = fr->next;
		free(fr);
	}
	free(s->buckets);
	free(s);
	eng->stat = NULL;
}

struct static_entry *static_lookup(struct sl_engine *eng, uint16_t port,
				   const char *path, uint32_t len)
{
	struct sl_static *s = eng->stat;
	struct static_entry *e;

	if (!s || !s->count)
		return NULL;
	for (e = s->buckets[path_hash(eng, port, path, len)]; e; e = e->hnext)
		if (e->port == port && e->path_len == len && memcmp(e->path, path, len) == 0)
			return e;
	return NULL;
}

static struct static_entry **slot_of(struct sl_engine *eng, uint16_t port,
				     const char *path, uint32_t len)
{
	struct static_entry **pp = &eng->stat->buckets[path_hash(eng, port, path, len)];

	while (*pp && !((*pp)->port == port && (*pp)->path_len == len &&
			memcmp((*pp)->path, path, len) == 0))
		pp = &(*pp)->hnext;
	return pp;
}

static char *dup_str(const char *s, size_t max)
{
	size_t n;
	char *d;

	if (!s)
		return NULL;
	n = strnlen(s, max + 1);
	if (n > max)
		return NULL;
	d = malloc(n + 1);
	if (d) {
		memcpy(d, s, n);
		d[n] = 0;
	}
	return d;
}

/* A header value must not break the header block it goes into. */
static bool header_safe(const char *s)
{
	for (; s && *s; s++)
		if ((unsigned char)*s < 0x20 && *s != '\t')
			return false;
	return true;
}

/* Extra header lines: "Name: value\r\n" each, nothing else. */
static bool extra_ok(const char *s)
{
	while (*s) {
		const char *eol = strstr(s, "\r\n"), *colon = strchr(s, ':');
		const char *p;

		if (!eol || !colon || colon > eol || colon == s)
			return false;
		for (p = s; p < eol; p++)
			if ((unsigned char)*p < 0x20 && *p != '\t')
				return false;
		s = eol + 2;
	}
	return true;
}

/*
 * A new entry, not in any bucket: the file's bytes and the header fields
 * of its responses (with `encoding`, those of a precompressed variant).
 * NULL with *rc = -errno.
 */
static struct static_entry *entry_make(uint32_t port, const char *path, const uint8_t *body,
				       size_t size, const char *content_type, const char *etag,
				       const char *last_modified, int64_t mtime_ns,
				       const char *extra_headers, uint32_t flags,
				       const char *encoding, int *rc)
{
	struct static_entry *e;
	size_t plen, flen;

	*rc = -EINVAL;
	if (port > 65535 || !path || path[0] != '/' || !content_type || !etag ||
	    !last_modified || (size && !body) || size > UINT32_MAX / 2)
		return NULL;
	plen = strnlen(path, 4097);
	if (plen > 4096 || !header_safe(content_type) || !header_safe(etag) ||
	    !header_safe(last_modified) || strchr(etag, '"'))
		return NULL;
	if (extra_headers && (strlen(extra_headers) > 4096 || !extra_ok(extra_headers)))
		return NULL;
	*rc = -ENOMEM;
	e = calloc(1, sizeof(*e));
	if (!e)
		return NULL;
	e->payload.refs = 1;
	e->port = (uint16_t)port;
	e->path = dup_str(path, 4096);
	e->path_len = (uint32_t)plen;
	e->etag = dup_str(etag, 256);
	e->last_modified = dup_str(last_modified, 64);
	e->size = (uint32_t)size;
	e->mtime_ns = mtime_ns;
	e->flags = flags;
	e->is_variant = encoding != NULL;
	e->body = malloc(size ? size : 1);
	/* the fields every 200/206 carries before Content-Length, as
	 * aiohttp's FileResponse orders them (a variant: Content-Encoding and
	 * Vary right after Content-Type) */
	flen = strlen(content_type) + strlen(etag) + strlen(last_modified) + 128;
	e->fields = malloc(flen);
	e->extra = extra_headers && *extra_headers ? dup_str(extra_headers, 4096) : NULL;
	e->extra_len = e->extra ? (uint32_t)strlen(e->extra) : 0;
	if (!e->path || !e->etag || !e->last_modified || !e->body || !e->fields ||
	    (extra_headers && *extra_headers && !e->extra)) {
		entry_free(e);
		return NULL;
	}
	if (size)
		memcpy(e->body, body, size);
	e->payload.data = e->body;
	e->payload.put = entry_payload_put;
	e->payload.frame = entry_payload_frame;
	if (encoding)
		e->fields_len = (uint32_t)snprintf(e->fields, flen,
						   "Content-Type: %s\r\nContent-Encoding: %s\r\n"
						   "Vary: Accept-Encoding\r\nEtag: \"%s\"\r\n"
						   "Last-Modified: %s\r\n", content_type, encoding,
						   etag, last_modified);
	else
		e->fields_len = (uint32_t)snprintf(e->fields, flen,
						   "Content-Type: %s\r\nEtag: \"%s\"\r\n"
						   "Last-Modified: %s\r\n", content_type, etag,
						   last_modified);
	/* as http_fast.c's build_header words a 200 */
	flen = 64 + e->fields_len + e->extra_len;
	e->head200 = malloc(flen);
	if (!e->head200) {
		entry_free(e);
		return NULL;
	}
	e->head200_len = (uint32_t)snprintf(e->head200, flen,
					    "200 OK\r\n%.*sContent-Length: %u\r\nAccept-Ranges: bytes\r\n"
					    "%.*sDate: ", (int)e->fields_len, e->fields, e->size,
					    (int)e->extra_len, e->extra ? e->extra : "");
	*rc = 0;
	return e;
}

/* Would `size` more bytes (in place of `old` bytes) fit the budget? */
static bool within_budget(const struct sl_static *s, uint64_t old, size_t size)
{
	return !s->budget || s->bytes - old + size <= s->budget;
}

int sl_static_put(struct sl_engine *eng, uint32_t port, const char *path,
		  const uint8_t *body, size_t size, const char *content_type,
		  const char *etag, const char *last_modified, int64_t mtime_ns,
		  const char *extra_headers, uint32_t flags)
{
	struct sl_static *s = eng->stat;
	struct static_entry *e, **pp;
	int rc;

	if (!s || !path || port > 65535)
		return -EINVAL;
	if (!within_budget(s, 0, size)) {
		/* a replaced entry gives its bytes back */
		e = static_lookup(eng, (uint16_t)port, path, (uint32_t)strnlen(path, 4097));
		if (!e || !within_budget(s, e->size, size))
			return -ENOSPC;
	}
	e = entry_make(port, path, body, size, content_type, etag, last_modified, mtime_ns,
		       extra_headers, flags, NULL, &rc);
	if (!e)
		return rc;
	pp = slot_of(eng, (uint16_t)port, path, e->path_len);
	if (*pp) {
		struct static_entry *old = *pp;

		e->hnext = old->hnext;
		old->hnext = NULL;
		*pp = e;
		s->count--;
		static_entry_put(eng, old);
	} else {
		e->hnext = NULL;
		*pp = e;
	}
	s->count++;
	s->bytes += size;
	return 0;
}

int sl_static_put_variant(struct sl_engine *eng, uint32_t port, const char *path,
			  const char *encoding, const uint8_t *body, size_t size,
			  const char *content_type, const char *etag,
			  const char *last_modified, int64_t mtime_ns,
			  const char *extra_headers)
{
	struct sl_static *s = eng->stat;
	struct static_entry *e, *v;
	int rc, which;

	if (!s || !path || !encoding || port > 65535)
		return -EINVAL;
	if (strcmp(encoding, "br") == 0)
		which = STATIC_VAR_BR;
	else if (strcmp(encoding, "gzip") == 0)
		which = STATIC_VAR_GZIP;
	else
		return -EINVAL;
	e = static_lookup(eng, (uint16_t)port, path, (uint32_t)strnlen(path, 4097));
	if (!e)
		return -ENOENT;
	if (!within_budget(s, e->variant[which] ? e->variant[which]->size : 0, size))
		return -ENOSPC;
	v = entry_make(port, path, body, size, content_type, etag, last_modified, mtime_ns,
		       extra_headers, 0, encoding, &rc);
	if (!v)
		return rc;
	if (e->variant[which])
		static_entry_put(eng, e->variant[which]);
	e->variant[which] = v;
	s->bytes += size;
	return 0;
}

int sl_static_remove(struct sl_engine *eng, uint32_t port, const char *path)
{
	struct static_entry **pp, *e;
	size_t plen;

	if (!eng->stat || !path || port > 65535)
		return -EINVAL;
	plen = strnlen(path, 4097);
	pp = slot_of(eng, (uint16_t)port, path, (uint32_t)plen);
	if (!*pp)
		return -ENOENT;
	e = *pp;
	*pp = e->hnext;
	e->hnext = NULL;
	eng->stat->count--;
	static_entry_put(eng, e);
	return 0;
}

int sl_static_config(struct sl_engine *eng, const char *server, uint64_t budget,
		     uint32_t keepalive_ms, const char *reason_416)
{
	struct sl_static *s = eng->stat;

	if (!s || !server || !header_safe(server) || strlen(server) >= sizeof(s->server))
		return -EINVAL;
	if (!reason_416 || !reason_416[0] || !header_safe(reason_416) ||
	    strlen(reason_416) >= sizeof(s->reason_416))
		return -EINVAL;
	snprintf(s->server, sizeof(s->server), "%s", server);
	snprintf(s->reason_416, sizeof(s->reason_416), "%s", reason_416);
	s->budget = budget;
	s->keepalive_ms = keepalive_ms;
	return 0;
}

/* RFC 9110 §5.6.7 IMF-fixdate of the current second, cached. */
const char *static_date(struct sl_engine *eng)
{
	static const char days[7][4] = { "Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat" };
	static const char months[12][4] = { "Jan", "Feb", "Mar", "Apr", "May", "Jun",
					    "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };
	struct sl_static *s = eng->stat;
	struct timespec ts;
	struct tm tm;

	clock_gettime(CLOCK_REALTIME, &ts);
	if (ts.tv_sec == s->date_sec && s->date[0])
		return s->date;
	gmtime_r(&ts.tv_sec, &tm);
	snprintf(s->date, sizeof(s->date), "%s, %02d %s %04d %02d:%02d:%02d GMT",
		 days[tm.tm_wday % 7], tm.tm_mday, months[tm.tm_mon % 12],
		 tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
	s->date_sec = ts.tv_sec;
	return s->date;
}

/*
 * Checksum partial sum of body[off, off+len).  Chunks laid out as the 200
 * response of this entry cuts them for this segment size are summed once
 * and remembered; any other chunk (ranges, other headers) is summed now.
 */
uint32_t static_chunk_csum(struct static_entry *e, uint32_t first, uint32_t mss,
			   uint32_t off, uint32_t len)
{
	uint32_t k, n;

	if (e->csum_mss != mss || e->csum_first != first) {
		if (e->chunk_frames)
			return csum_partial(e->body + off, len, 0);	/* another cut is placed */
		free(e->csums);
		e->csums = NULL;
		e->ncsums = 0;
		e->csum_mss = mss;
		e->csum_first = first;
		if (first < e->size && mss) {
			n = 1 + (e->size - first + mss - 1) / mss;
			e->csums = calloc(n, sizeof(*e->csums));
			e->ncsums = e->csums ? n : 0;
		}
	}
	if (e->csums && off >= first && (off - first) % mss == 0) {
		k = 1 + (off - first) / mss;
		if (k < e->ncsums && (len == mss || off + len == e->size)) {
			if (!(e->csums[k] >> 32))
				e->csums[k] = 1ull << 32 | csum_partial(e->body + off, len, 0);
			return (uint32_t)e->csums[k];
		}
	}
	return csum_partial(e->body + off, len, 0);
}

/*
 * Multi-buffer TX: the UMEM frame holding body[off, off+len) when it is a
 * chunk of the cut (first, mss), placing it there on first use; or
 * SL_NO_FRAME (another cut, no frame to spare: the caller copies instead).
 * A file keeps one cut in UMEM, the one its first response used.
 */
static uint32_t chunk_frame(struct sl_engine *eng, struct static_entry *e, uint32_t first,
			    uint32_t mss, uint32_t off, uint32_t len)
{
	struct sl_xsk *x = &eng->xsk;
	uint32_t k, n, f;

	if (!x->sg || !mss || off < first || (off - first) % mss || mss > x->frame_size)
		return SL_NO_FRAME;
	if (!e->chunk_frames) {
		if (e->csum_mss != mss || e->csum_first != first)
			(void)static_chunk_csum(e, first, mss, off, len);	/* sets the cut */
		if (e->csum_mss != mss || e->csum_first != first || first >= e->size)
			return SL_NO_FRAME;
		n = 1 + (e->size - first + mss - 1) / mss;
		e->chunk_frames = malloc(n * sizeof(*e->chunk_frames));
		if (!e->chunk_frames)
			return SL_NO_FRAME;
		for (k = 0; k < n; k++)
			e->chunk_frames[k] = SL_NO_FRAME;
		e->nchunk_frames = n;
	}
	if (e->csum_mss != mss || e->csum_first != first)
		return SL_NO_FRAME;
	k = 1 + (off - first) / mss;
	if (k >= e->nchunk_frames || (len != mss && off + len != e->size))
		return SL_NO_FRAME;
	f = e->chunk_frames[k];
	if (f != SL_NO_FRAME)
		return f;
	/* keep half the UMEM for the rings and the send queues */
	if (x->free_top < x->frame_count / 2)
		return SL_NO_FRAME;
	f = xsk_frame_alloc(x, false);
	if (f == SL_NO_FRAME)
		return SL_NO_FRAME;
	x->meta[f].owner = FRAME_STATIC;
	memcpy(xsk_frame_data(x, f), e->body + off, len);
	e->chunk_frames[k] = f;
	return f;
}

static struct static_entry *entry_of(struct tcp_payload *p)
{
	return (struct static_entry *)((char *)p - offsetof(struct static_entry, payload));
}

/* struct tcp_payload's put: a segment or response lets go of the body */
static void entry_payload_put(struct sl_engine *eng, struct tcp_payload *p)
{
	static_entry_put(eng, entry_of(p));
}

static uint32_t entry_payload_frame(struct sl_engine *eng, struct tcp_payload *p,
				    uint32_t first, uint32_t mss, uint32_t off, uint32_t len)
{
	return chunk_frame(eng, entry_of(p), first, mss, off, len);
}
