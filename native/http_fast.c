/* SPDX-License-Identifier: MIT */
/*
 * http_fast.c - HTTP/1.x requests for registered static files, answered in
 * C from the static store without waking Python (the Sandstorm idea).
 *
 * It is TCP's application (struct tcp_app, http_fast_app below): a
 * connection accepted by a listener with the fast path on starts owned by
 * it, and Python does not even know it exists.  Its in-order bytes come
 * here (fast_input) instead of to Python.  Each complete request is
 * either
 *   - one this file answers exactly as aiohttp's FileResponse would (GET or
 *     HEAD of a registered file, or of its .br/.gz variant; 200, 206, 304,
 *     416), queued as a response;
 *   - or anything else (another method, a body, an unknown path, a header
 *     we do not interpret, a malformed byte): then that one request is
 *     handed to Python (an ACCEPT event, the request as DATA, framed by
 *     http_frame.c), input after it waits here, and Python's response is
 *     framed as it is written (fast_output).  When it is complete and no
 *     close was asked for, the connection comes back at the next poll
 *     (fast_later; then the waiting requests), Python's transport staying
 *     attached and idle until its next request (its close meanwhile only
 *     ends Python's side; the fast path ending the connection tells it
 *     with a RETURNED event).  What
 *     cannot be framed for sure keeps the connection Python's for good
 *     (stay(), counted by reason).  Responses already queued keep their
 *     place in the stream: Python's writes wait until they are out.
 *
 * Every length and index here comes from the wire: all parsing is bounded
 * by the buffer length, never by a terminator.
 *
 * Responses are produced lazily (fast_fill, from tcp_output): a
 * header segment (header + the first body bytes) copied into a frame, then
 * segments that reference the stored body (SEG_STATIC), cut in the same
 * places for every response so that their checksum sums are computed once.
 */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

#include "http_fast.h"
#include "http_token.h"

static struct fast_conn *fc(const struct sl_conn *c)
{
	return (struct fast_conn *)c->app_ctx;
}

/* tcp_app.owns: the input is ours (Python may have a request meanwhile;
 * input it was not given yet, or that follows it, waits here) */
static bool fast_owns(const struct sl_conn *c)
{
	const struct fast_conn *f = fc(c);

	if (!f)
		return false;
	switch (f->mode) {
	case FAST_OWN:
		return true;
	case FAST_PYTHON:
		return !c->detached;
	default:
		return f->req.len > 0 && !c->detached;
	}
}

/* tcp_app.holds: Python has no transport for it */
static bool fast_holds(const struct sl_conn *c)
{
	return fc(c) && fc(c)->mode == FAST_OWN;
}

/* tcp_app.pending: responses wait to be queued */
static bool fast_pending(const struct sl_conn *c)
{
	return fc(c) && fc(c)->head;
}

enum { M_GET = 1, M_HEAD = 2 };

struct http_req {
	int method;
	int minor;		/* HTTP/1.<minor> */
	uint32_t path_len;
	bool conn_close, conn_keepalive;
	bool has_range;
	bool rstart_set, rend_set;
	uint64_t rstart, rend;
	const uint8_t *inm;	/* If-None-Match value */
	uint32_t inm_len;
	bool has_ims;
	int64_t ims;		/* If-Modified-Since, epoch seconds */
	const uint8_t *ae;	/* Accept-Encoding value (NULL: none) */
	uint32_t ae_len;
	bool ae_twice;		/* more than one Accept-Encoding line */
	/* last: parse_request clears the fields above, decode_path writes
	 * this one (a kilobyte a request not worth zeroing) */
	char path[1024];	/* percent-decoded */
};

/* ---- small bounded parsers ------------------------------------------------ */

/* RFC 9110 §5.6.7 IMF-fixdate only, e.g. "Sun, 06 Nov 1994 08:49:37 GMT". */
static bool parse_imf_date(const uint8_t *p, uint32_t len, int64_t *out)
{
	static const char months[] = "janfebmaraprmayjunjulaugsepoctnovdec";
	uint64_t day, year, hh, mm, ss;
	int mon = -1, i;
	int64_t days, y;

	if (len != 29 || p[3] != ',' || p[4] != ' ' || p[7] != ' ' || p[11] != ' ' ||
	    p[16] != ' ' || p[19] != ':' || p[22] != ':' || p[25] != ' ' ||
	    memcmp(p + 26, "GMT", 3) != 0)
		return false;
	for (i = 0; i < 12; i++)
		if (http_lower(p[8]) == months[3 * i] && http_lower(p[9]) == months[3 * i + 1] &&
		    http_lower(p[10]) == months[3 * i + 2])
			mon = i;
	if (mon < 0 || !http_parse_u64(p + 5, 2, &day) || !http_parse_u64(p + 12, 4, &year) ||
	    !http_parse_u64(p + 17, 2, &hh) || !http_parse_u64(p + 20, 2, &mm) ||
	    !http_parse_u64(p + 23, 2, &ss) || day < 1 || day > 31 || hh > 23 || mm > 59 ||
	    ss > 60 || year < 1970)
		return false;
	/* days since the epoch (proleptic Gregorian, H. Hinnant's algorithm) */
	y = (int64_t)year - (mon < 2);
	{
		int64_t era = y / 400, yoe = y - era * 400;
		int64_t mp = (mon + 10) % 12;	/* March = 0 */
		int64_t doy = (153 * mp + 2) / 5 + (int64_t)day - 1;
		int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;

		days = era * 146097 + doe - 719468;
	}
	*out = days * 86400 + (int64_t)(hh * 3600 + mm * 60 + ss);
	return true;
}

/* "bytes=<digits>-<digits>", either may be empty (aiohttp's own pattern). */
static bool parse_range(const uint8_t *p, uint32_t len, struct http_req *r)
{
	uint32_t dash, i;

	if (len < 7 || !http_name_is(p, 6, "bytes="))
		return false;
	p += 6;
	len -= 6;
	for (dash = 0; dash < len && p[dash] != '-'; dash++)
		;
	if (dash == len)
		return false;
	for (i = 0; i < len; i++)
		if (i != dash && (p[i] < '0' || p[i] > '9'))
			return false;
	r->has_range = true;
	r->rstart_set = dash > 0;
	r->rend_set = dash + 1 < len;
	if (r->rstart_set && !http_parse_u64(p, dash, &r->rstart))
		return false;
	if (r->rend_set && !http_parse_u64(p + dash + 1, len - dash - 1, &r->rend))
		return false;
	return true;
}

/* Connection: a comma-separated token list; false for Upgrade (not ours). */
static bool parse_connection(const uint8_t *p, uint32_t len, struct http_req *r)
{
	struct http_conn_tokens ct = { 0 };

	http_each_token(p, len, http_conn_token, &ct);
	r->conn_close |= ct.close;
	r->conn_keepalive |= ct.keepalive;
	return !ct.upgrade;
}

/* If-None-Match (RFC 9110 §13.1.2): "*" or entity tags; weak comparison.
 * Returns 1 match, 0 no match, -1 a list we do not read (Python will). */
static int inm_matches(const uint8_t *p, uint32_t len, const char *etag)
{
	size_t elen = strlen(etag);
	bool match = false;
	uint32_t i = 0;

	if (len == 1 && p[0] == '*')
		return 1;
	while (i < len) {
		uint32_t s;

		if (i + 2 <= len && p[i] == 'W' && p[i + 1] == '/')
			i += 2;
		if (i >= len || p[i] != '"')
			return -1;
		s = ++i;
		while (i < len && p[i] != '"')
			i++;
		if (i >= len)
			return -1;
		if (i - s == elen && memcmp(p + s, etag, elen) == 0)
			match = true;
		i++;
		while (i < len && (p[i] == ' ' || p[i] == '\t'))
			i++;
		if (i < len) {
			if (p[i] != ',')
				return -1;
			i++;
			while (i < len && (p[i] == ' ' || p[i] == '\t'))
				i++;
			if (i >= len)
				return -1;
		}
	}
	return match ? 1 : 0;
}

/* Percent-decodes the path part of a request target.  Anything odd (an
 * invalid escape, NUL, an encoded '/', a dot segment, '//') is not ours. */
static bool decode_path(const uint8_t *t, uint32_t len, struct http_req *r)
{
	uint32_t i, o = 0;

	for (i = 0; i < len; i++) {
		int c = t[i];

		if (c == '?')
			break;
		if (c == '#' || c == '\\')
			return false;
		if (c == '%') {
			int hi, lo;

			if (i + 2 >= len)
				return false;
			hi = http_hexval(t[i + 1]);
			lo = http_hexval(t[i + 2]);
			if (hi < 0 || lo < 0)
				return false;
			c = hi << 4 | lo;
			if (c == 0 || c == '/' || c == '\\' || c == '%' || c == '?' || c == '#')
				return false;
			i += 2;
		}
		if (o + 1 >= sizeof(r->path))
			return false;
		r->path[o++] = (char)c;
	}
	r->path[o] = 0;
	r->path_len = o;
	if (o == 0 || r->path[0] != '/')
		return false;
	for (i = 0; i < o; i++) {
		if (r->path[i] != '/')
			continue;
		if (i + 1 < o && r->path[i + 1] == '/')
			return false;
		if (i + 1 < o && r->path[i + 1] == '.' &&
		    (i + 2 == o || r->path[i + 2] == '/' ||
		     (r->path[i + 2] == '.' && (i + 3 == o || r->path[i + 3] == '/'))))
			return false;
	}
	return true;
}

/* Where the head ends: the length of buf up to and with its first
 * CRLF CRLF, 0 if it has none yet.  memchr finds the line feeds (a word
 * at a time) where a byte loop took ~3 instructions a byte. */
static uint32_t head_end(const uint8_t *buf, uint32_t len)
{
	const uint8_t *p = buf, *stop = buf + len, *nl;

	while (p < stop && (nl = memchr(p, '\n', (size_t)(stop - p))) != NULL) {
		if (nl - buf >= 3 && nl[-1] == '\r' && nl[-2] == '\n' && nl[-3] == '\r')
			return (uint32_t)(nl - buf) + 1;
		p = nl + 1;
	}
	return 0;
}

/* The first CRLF in buf[from, end): the index of its CR, or end - 1 if
 * there is none (the caller's "no line end" test is eol + 1 >= end). */
static uint32_t line_end(const uint8_t *buf, uint32_t from, uint32_t end)
{
	const uint8_t *p = buf + from, *stop = buf + end - 1, *cr;

	if (end == 0 || from >= end - 1)
		return end ? end - 1 : 0;
	while (p < stop && (cr = memchr(p, '\r', (size_t)(stop - p))) != NULL) {
		if (cr[1] == '\n')
			return (uint32_t)(cr - buf);
		p = cr + 1;
	}
	return end - 1;
}

/*
 * One request from the front of buf.  Returns its length when it is
 * complete and ours, 0 when more bytes are needed, -1 when it is not for
 * the fast path.
 */
static int parse_request(const uint8_t *buf, uint32_t len, struct http_req *r)
{
	uint32_t i, end, line, tstart, tend;
	bool seen_range = false, seen_inm = false, seen_ims = false, seen_conn = false;

	memset(r, 0, offsetof(struct http_req, path));
	r->path[0] = 0;
	/* the method decides early: nothing else is worth waiting for */
	if (len >= 4 && memcmp(buf, "GET ", 4) == 0) {
		r->method = M_GET;
		i = 4;
	} else if (len >= 5 && memcmp(buf, "HEAD ", 5) == 0) {
		r->method = M_HEAD;
		i = 5;
	} else {
		if ((len < 4 && memcmp(buf, "GET ", len) == 0) ||
		    (len < 5 && memcmp(buf, "HEAD ", len) == 0))
			return 0;
		return -1;
	}
	end = head_end(buf, len);
	if (!end)
		return len > FAST_MAX_REQUEST ? -1 : 0;
	/* the request is buf[0, end) */
	if (end > FAST_MAX_REQUEST)
		return -1;

	/* request-line: method SP request-target SP HTTP/1.x CRLF */
	tstart = i;
	while (i < end && buf[i] > 0x20 && buf[i] < 0x7f)
		i++;
	tend = i;
	if (tend == tstart || buf[tstart] != '/' || i + 10 > end || buf[i] != ' ' ||
	    memcmp(buf + i + 1, "HTTP/1.", 7) != 0 || (buf[i + 8] != '0' && buf[i + 8] != '1') ||
	    buf[i + 9] != '\r' || buf[i + 10] != '\n')
		return -1;
	r->minor = buf[i + 8] - '0';
	if (!decode_path(buf + tstart, tend - tstart, r))
		return -1;
	i += 11;

	/* header fields until the empty line */
	for (line = i; line + 2 <= end; line = i) {
		uint32_t eol = line_end(buf, line, end);

		if (eol + 1 >= end)
			return -1;
		i = eol + 2;
		if (eol == line)
			break;	/* the empty line */
		{
			const uint8_t *n = buf + line, *v;
			uint32_t nl, vl;

			/* obs-fold, spaces before ':', a bad name, control bytes */
			if (!http_split_field(n, eol - line, &nl, &v, &vl))
				return -1;

			if (http_name_is(n, nl, "content-length")) {
				if (vl != 1 || v[0] != '0')
					return -1;
			} else if (http_name_is(n, nl, "transfer-encoding") || http_name_is(n, nl, "upgrade") ||
				   http_name_is(n, nl, "expect") || http_name_is(n, nl, "if-match") ||
				   http_name_is(n, nl, "if-unmodified-since") ||
				   http_name_is(n, nl, "if-range")) {
				return -1;
			} else if (http_name_is(n, nl, "connection")) {
				if (seen_conn || !parse_connection(v, vl, r))
					return -1;
				seen_conn = true;
			} else if (http_name_is(n, nl, "range")) {
				if (seen_range || !parse_range(v, vl, r))
					return -1;
				seen_range = true;
			} else if (http_name_is(n, nl, "if-none-match")) {
				if (seen_inm)
					return -1;
				seen_inm = true;
				r->inm = v;
				r->inm_len = vl;
			} else if (http_name_is(n, nl, "if-modified-since")) {
				if (seen_ims || !parse_imf_date(v, vl, &r->ims))
					return -1;
				seen_ims = r->has_ims = true;
			} else if (http_name_is(n, nl, "accept-encoding")) {
				r->ae_twice = r->ae != NULL;
				r->ae = v;
				r->ae_len = vl;
			}
		}
	}
	if (i != end)
		return -1;
	/* HEAD with conditions or ranges: rare, leave them to aiohttp */
	if (r->method == M_HEAD && (r->has_range || seen_inm || seen_ims))
		return -1;
	return (int)end;
}

/* ---- responses ---------------------------------------------------------- */

enum resp_kind { R_200, R_206, R_304, R_416 };

/* aiohttp keeps HTTP/1.1 open unless "close"; HTTP/1.0 only on "keep-alive" */
static bool keeps_alive(const struct http_req *r)
{
	return r->minor == 1 ? !r->conn_close : (r->conn_keepalive && !r->conn_close);
}

/* Room for any response head of entry e (build_header's bound). */
static size_t header_cap(const struct sl_engine *eng, const struct static_entry *e)
{
	return 512 + e->fields_len + e->extra_len + strlen(eng->stat->server);
}

/* Writes the response head into h (header_cap(e) bytes); false if it does
 * not fit. */
static bool build_header(struct sl_engine *eng, const struct http_req *r,
			 const struct static_entry *e, enum resp_kind kind,
			 uint64_t start, uint64_t count, uint8_t *h, size_t cap,
			 uint32_t *out_len)
{
	struct sl_static *s = eng->stat;
	const char *conn = "";
	int n = 0;

	if (r->minor == 0 && keeps_alive(r))
		conn = "Connection: keep-alive\r\n";
	else if (r->minor == 1 && r->conn_close)
		conn = "Connection: close\r\n";
	if (kind == R_200 && e->head200) {
		/* the common case, copied: the parts made once per file, the
		 * date of this second, the server name, the connection field */
		const char *date = static_date(eng);
		size_t dl = strlen(date), sl = strlen(s->server), cl = strlen(conn);
		uint8_t *p = h;

		if (9 + e->head200_len + dl + 10 + sl + 2 + cl + 2 > cap)
			return false;
		memcpy(p, r->minor ? "HTTP/1.1 " : "HTTP/1.0 ", 9);
		p += 9;
		memcpy(p, e->head200, e->head200_len);
		p += e->head200_len;
		memcpy(p, date, dl);
		p += dl;
		memcpy(p, "\r\nServer: ", 10);
		p += 10;
		memcpy(p, s->server, sl);
		p += sl;
		memcpy(p, "\r\n", 2);
		p += 2;
		memcpy(p, conn, cl);
		p += cl;
		memcpy(p, "\r\n", 2);
		p += 2;
		*out_len = (uint32_t)(p - h);
		return true;
	}
	switch (kind) {
	case R_200:
	case R_206:
		n = snprintf((char *)h, cap, "HTTP/1.%d %s\r\n%.*sContent-Length: %llu\r\n"
			     "Accept-Ranges: bytes\r\n", r->minor,
			     kind == R_200 ? "200 OK" : "206 Partial Content",
			     (int)e->fields_len, e->fields, (unsigned long long)count);
		if (kind == R_206)
			n += snprintf((char *)h + n, cap - (size_t)n,
				      "Content-Range: bytes %llu-%llu/%u\r\n",
				      (unsigned long long)start,
				      (unsigned long long)(start + count - 1), e->size);
		break;
	case R_304:
		n = snprintf((char *)h, cap, "HTTP/1.%d 304 Not Modified\r\nEtag: \"%s\"\r\n"
			     "Last-Modified: %s\r\n", r->minor, e->etag, e->last_modified);
		break;
	case R_416:
		n = snprintf((char *)h, cap, "HTTP/1.%d 416 %s\r\n"
			     "Content-Range: bytes */%u\r\nTransfer-Encoding: chunked\r\n"
			     "Content-Type: application/octet-stream\r\n", r->minor, s->reason_416,
			     e->size);
		break;
	}
	n += snprintf((char *)h + n, cap - (size_t)n, "%.*sDate: %s\r\nServer: %s\r\n%s\r\n%s",
		      (int)e->extra_len, e->extra ? e->extra : "", static_date(eng), s->server,
		      conn, kind == R_416 && r->method == M_GET ? "0\r\n\r\n" : "");
	if (n < 0 || (size_t)n >= cap)
		return false;
	*out_len = (uint32_t)n;
	return true;
}

/* `name` (lower case) occurs in p[0, len), ignoring case */
static bool contains_ci(const uint8_t *p, uint32_t len, const char *name)
{
	uint32_t n = (uint32_t)strlen(name), i, k;

	for (i = 0; i + n <= len; i++) {
		for (k = 0; k < n && http_lower(p[i + k]) == name[k]; k++)
			;
		if (k == n)
			return true;
	}
	return false;
}

/* RFC 9110 §12.4.2: some element of the list has weight q=0 ("not
 * acceptable"), e.g. "br;q=0" or "*; q=0.000". */
static bool has_q0(const uint8_t *p, uint32_t len)
{
	uint32_t i, j;

	for (i = 0; i < len; i++) {
		if (p[i] != ';')
			continue;
		for (j = i + 1; j < len && (p[j] == ' ' || p[j] == '\t'); j++)
			;
		if (j + 2 >= len || http_lower(p[j]) != 'q' || p[j + 1] != '=' || p[j + 2] != '0')
			continue;
		j += 3;
		if (j < len && p[j] == '.')
			for (j++; j < len && p[j] == '0'; j++)
				;
		if (j == len || p[j] == ' ' || p[j] == '\t' || p[j] == ',' || p[j] == ';')
			return true;
	}
	return false;
}

/*
 * The representation aiohttp's FileResponse would send: the first of .br,
 * .gz whose coding name occurs in the (lower-cased) Accept-Encoding and
 * whose sibling exists on disk; else the file itself.  NULL: leave it to
 * aiohttp (the sibling is not in the store, or the request says q=0 for a
 * coding, which aiohttp's substring test would not honour).
 */
static struct static_entry *negotiate(struct static_entry *e, const struct http_req *r)
{
	static const struct {
		const char *name;
		uint32_t flag;
		int which;
	} codings[] = {
		{ "br", SL_STATIC_HAS_BR, STATIC_VAR_BR },
		{ "gzip", SL_STATIC_HAS_GZIP, STATIC_VAR_GZIP },
	};
	size_t k;

	if (!r->ae || !(e->flags & SL_STATIC_HAS_VARIANTS))
		return e;
	if (r->ae_twice || !(e->flags & (SL_STATIC_HAS_BR | SL_STATIC_HAS_GZIP)) ||
	    has_q0(r->ae, r->ae_len))
		return NULL;
	for (k = 0; k < sizeof(codings) / sizeof(codings[0]); k++)
		if ((e->flags & codings[k].flag) && contains_ci(r->ae, r->ae_len, codings[k].name))
			return e->variant[codings[k].which];
	return e;
}

/* Decides the response as aiohttp's FileResponse would.  -1: not ours. */
static int plan(const struct http_req *r, const struct static_entry *e,
		enum resp_kind *kind, uint64_t *start, uint64_t *count)
{
	*kind = R_200;
	*start = 0;
	*count = e->size;
	if (r->inm) {
		int m = inm_matches(r->inm, r->inm_len, e->etag);

		if (m < 0)
			return -1;
		if (m) {
			*kind = R_304;
			return 0;
		}
	} else if (r->has_ims && e->mtime_ns <= r->ims * 1000000000LL) {
		*kind = R_304;
		return 0;
	}
	if (!r->has_range)
		return 0;
	/* aiohttp's http_range, then _prepare_open_file */
	if (!r->rstart_set && !r->rend_set) {
		*kind = R_416;
		return 0;
	}
	if (!r->rstart_set) {
		/* suffix: the last rend bytes */
		uint64_t want = r->rend;

		*start = want >= e->size ? 0 : e->size - want;
		if (want == 0)
			*start = 0;	/* aiohttp: start = -0 = 0, the whole file */
		*count = e->size - *start;
	} else {
		if (r->rend_set && r->rstart >= r->rend + 1) {
			*kind = R_416;
			return 0;
		}
		*start = r->rstart;
		if (*start >= e->size) {
			*kind = R_416;
			return 0;
		}
		*count = (r->rend_set && r->rend + 1 < e->size ? r->rend + 1 : e->size) - *start;
	}
	if (*start >= e->size) {
		*kind = R_416;
		return 0;
	}
	*kind = R_206;
	return 0;
}

static void resp_free(struct sl_engine *eng, struct fast_resp *fr)
{
	struct sl_static *s = eng->stat;

	if (fr->e)
		static_entry_put(eng, fr->e);
	if (fr->pooled && s && s->nspare < FAST_RESP_SPARE) {
		fr->next = s->spare;
		s->spare = fr;
		s->nspare++;
		return;
	}
	free(fr);	/* the head is in the same allocation */
}

/* A response record with room for a head of cap bytes behind it. */
static struct fast_resp *resp_alloc(struct sl_engine *eng, size_t cap)
{
	struct sl_static *s = eng->stat;
	struct fast_resp *fr;
	bool pooled = sizeof(*fr) + cap <= FAST_RESP_BLOCK;

	if (pooled && s && s->spare) {
		fr = s->spare;
		s->spare = fr->next;
		s->nspare--;
	} else {
		fr = malloc(pooled ? FAST_RESP_BLOCK : sizeof(*fr) + cap);
		if (!fr)
			return NULL;
	}
	memset(fr, 0, sizeof(*fr));
	fr->pooled = pooled;
	fr->hdr = (uint8_t *)(fr + 1);
	return fr;
}

/* Queues the response to one parsed request.  false: not ours after all. */
static bool respond(struct sl_engine *eng, struct sl_conn *c, const struct http_req *r)
{
	struct fast_conn *f = fc(c);
	struct static_entry *e = static_lookup(eng, c->local_port, r->path, r->path_len);
	struct fast_resp *fr;
	enum resp_kind kind;
	uint64_t start, count;
	size_t cap;

	if (e)
		e = negotiate(e, r);
	if (!e)
		return false;
	if (f->nresp >= FAST_MAX_PIPELINE || plan(r, e, &kind, &start, &count) < 0)
		return false;
	/* one allocation per response: the record and its head behind it */
	cap = header_cap(eng, e);
	fr = resp_alloc(eng, cap);
	if (!fr)
		return false;
	if (!build_header(eng, r, e, kind, start, count, fr->hdr, cap, &fr->hdr_len)) {
		resp_free(eng, fr);
		return false;
	}
	if ((kind == R_200 || kind == R_206) && r->method == M_GET && count) {
		payload_get(&e->payload);
		fr->e = e;
		fr->body_next = (uint32_t)start;
		fr->body_end = (uint32_t)(start + count);
	}
	fr->close_after = !keeps_alive(r);
	if (f->tail)
		f->tail->next = fr;
	else
		f->head = fr;
	f->tail = fr;
	f->nresp++;
	eng->ctr.fast_requests++;
	eng->ctr.fast_status_200 += kind == R_200;
	eng->ctr.fast_status_206 += kind == R_206;
	eng->ctr.fast_status_304 += kind == R_304;
	eng->ctr.fast_status_416 += kind == R_416;
	eng->ctr.fast_encoded += e->is_variant;
	conn_dirty(eng, c);
	return true;
}

/* ---- the connection ------------------------------------------------------ */

/* tcp_app.attach: a new connection of a fast-path listener is ours. */
static int fast_attach(struct sl_engine *eng, struct sl_conn *c)
{
	struct tcp_listener *l = listener_by_id(eng, c->listener);
	struct fast_conn *f = calloc(1, sizeof(*f));

	if (!f)
		return -ENOMEM;
	c->app_ctx = f;
	f->handback = !l || !(l->app_flags & SL_FAST_STAY);
	/* a response is a whole: its last, short segment must not wait for
	 * the ACK of the others (Nagle against the peer's delayed ACK) */
	c->nodelay = true;
	f->active_us = eng->now_us;
	if (eng->stat && eng->stat->keepalive_ms)
		timer_set(eng, c, T_KEEPALIVE,
			  eng->now_us + (uint64_t)eng->stat->keepalive_ms * 1000);
	return 0;
}

/* tcp_app.release: the connection goes. */
static void fast_release(struct sl_engine *eng, struct sl_conn *c)
{
	struct fast_conn *f = fc(c);
	struct fast_resp *fr, *n;

	if (!f)
		return;
	for (fr = f->head; fr; fr = n) {
		n = fr->next;
		resp_free(eng, fr);
	}
	free(f->req.buf);
	free(f->resp);
	free(f);
	c->app_ctx = NULL;
}

static void count_stay(struct sl_engine *eng, enum hf_stay why)
{
	struct sl_counters *k = &eng->ctr;

	switch (why) {
	case HF_STAY_CLOSE: k->fast_stay_close++; break;
	case HF_STAY_UPGRADE: k->fast_stay_upgrade++; break;
	case HF_STAY_REQUEST_CHUNKED: k->fast_stay_request_chunked++; break;
	case HF_STAY_REQUEST_UNFRAMED: k->fast_stay_request_unframed++; break;
	case HF_STAY_CLOSE_DELIMITED: k->fast_stay_close_delimited++; break;
	case HF_STAY_CL_AND_TE: k->fast_stay_cl_and_te++; break;
	case HF_STAY_BAD_LENGTH: k->fast_stay_bad_length++; break;
	case HF_STAY_BAD_CHUNK: k->fast_stay_bad_chunk++; break;
	case HF_STAY_EXTRA_BYTES: k->fast_stay_extra_bytes++; break;
	case HF_STAY_MALFORMED: k->fast_stay_malformed++; break;
	case HF_STAY_OPT_OUT: k->fast_stay_opt_out++; break;
	case HF_STAY_EOF: k->fast_stay_eof++; break;
	case HF_STAY_BACKLOG: k->fast_stay_backlog++; break;
	default: break;
	}
}

/* Appends to a byte queue; false when there is no memory (q unchanged). */
static bool reserve(struct byteq *q, uint32_t more)
{
	uint32_t need = q->len + more;
	uint8_t *nb;

	if (need <= q->cap)
		return true;
	nb = realloc(q->buf, need);
	if (!nb)
		return false;
	q->buf = nb;
	q->cap = need;
	return true;
}

/* Input held for Python goes to it, ahead of anything later.  Without
 * memory for that now, it stays held (and input queues behind it) until
 * the next poll tries again. */
static void give_held(struct sl_engine *eng, struct sl_conn *c)
{
	struct fast_conn *f = fc(c);

	if (c->detached) {
		f->req.len = 0;		/* Python closed: nobody will read it */
		return;
	}
	if (!conn_give_python(eng, c, &f->req)) {
		conn_app_later(eng, c);
		return;
	}
	if (f->eof_held) {
		f->eof_held = false;
		conn_eof(eng, c);	/* not ours any more: Python's EOF */
	}
}

/* The connection stays Python's from now on (`why` is counted). */
static void stay(struct sl_engine *eng, struct sl_conn *c, enum hf_stay why)
{
	struct fast_conn *f = fc(c);

	count_stay(eng, why);
	f->mode = FAST_STUCK;
	free(f->resp);
	f->resp = NULL;
	f->to_python = 0;
	give_held(eng, c);
}

/*
 * Bytes for Python: to the transport it still has for the connection (it
 * stayed attached, idle, while the fast path answered), else with an
 * ACCEPT, as a new connection.
 */
static bool to_python(struct sl_engine *eng, struct sl_conn *c, const uint8_t *buf,
		      uint32_t len)
{
	if (!c->accepted)
		return conn_hand_to_python(eng, c, buf, len);
	timer_set(eng, c, T_KEEPALIVE, 0);	/* Python's keep-alive now */
	if (c->want_writable)
		conn_writable_later(eng, c);	/* its writes waited for its turn */
	return conn_to_python_copy(eng, c, buf, len);
}

/* Python takes the connection for good: `rest` and all later input
 * (`rest` may point into f->req: it is copied first). */
static bool hand_for_good(struct sl_engine *eng, struct sl_conn *c, const uint8_t *rest,
			  uint32_t len, enum hf_stay why)
{
	struct fast_conn *f = fc(c);

	if (!c->detached && !to_python(eng, c, rest, len))
		return false;
	/* detached: it was closing, the peer sent more after "Connection: close" */
	count_stay(eng, why);
	eng->ctr.fast_handovers++;
	f->mode = FAST_STUCK;
	f->req.len = 0;
	return true;
}

/*
 * Python gets one request (its header, and its body as it arrives; the
 * input after it waits here).  Returns the bytes of buf it took, or -1
 * without memory.
 */
static int64_t hand_one(struct sl_engine *eng, struct sl_conn *c, const uint8_t *buf,
			uint32_t len, const struct hf_request *hr)
{
	struct fast_conn *f = fc(c);
	uint64_t want = (uint64_t)hr->hdr_len + hr->body_len;
	uint32_t take = want < len ? (uint32_t)want : len;
	struct hf_response *resp = f->resp;

	if (c->detached) {
		/* closing after "Connection: close": nobody to hand it to */
		return hand_for_good(eng, c, buf, len, HF_STAY_CLOSE) ? (int64_t)len : -1;
	}
	/* the framing state is allocated at a connection's first hand-over and
	 * reused for its later ones: no allocation per dynamic request */
	if (!resp && !(resp = malloc(sizeof(*resp))))
		return -1;
	if (!to_python(eng, c, buf, take)) {
		if (resp != f->resp)
			free(resp);
		return -1;
	}
	eng->ctr.fast_handovers++;
	hf_response_init(resp, hr->head, hr->close);
	f->resp = resp;
	f->mode = FAST_PYTHON;
	f->to_python = want - take;
	return take;
}

static void close_when_done(struct sl_engine *eng, struct sl_conn *c)
{
	struct fast_conn *f = fc(c);

	f->closing = true;
	/* a transport Python kept for it learns (else: at the next poll) */
	if (!conn_python_gone(eng, c))
		conn_app_later(eng, c);
	c->detached = true;	/* nobody above will ever read it */
	if (!f->head)
		conn_app_close(eng, c);
}

/*
 * Takes the requests at the front of buf: answers the fast path's, hands
 * the first other one to Python (and stops there).  Returns the bytes
 * taken, or -1 when they could not be taken (no memory).
 */
static int64_t serve(struct sl_engine *eng, struct sl_conn *c, const uint8_t *buf,
		     uint32_t len)
{
	struct fast_conn *f = fc(c);
	uint32_t used = 0;
	struct hf_request hr;
	struct http_req r;

	while (used < len && !f->closing && f->mode == FAST_OWN) {
		int n = parse_request(buf + used, len - used, &r);
		int64_t took;

		if (n == 0)
			break;
		if (n > 0 && respond(eng, c, &r)) {
			used += (uint32_t)n;
			if (!keeps_alive(&r))
				close_when_done(eng, c);
			continue;
		}
		/* not ours: Python's, framed so that it can come back */
		n = hf_request(buf + used, len - used, FAST_MAX_REQUEST, &hr);
		if (n == 0)
			break;	/* its header is not complete yet */
		if (n < 0 || !f->handback) {
			if (!hand_for_good(eng, c, buf + used, len - used,
					   n < 0 ? (enum hf_stay)-n : HF_STAY_OPT_OUT))
				return -1;
			return len;
		}
		took = hand_one(eng, c, buf + used, len - used, &hr);
		if (took < 0)
			return -1;
		used += (uint32_t)took;
	}
	return used;
}

/*
 * Input for the fast path (FAST_OWN), or held input it takes back to
 * (data NULL).  Returns false only when the bytes could not be taken at
 * all (no memory): the caller does not ACK them then.
 */
static bool take(struct sl_engine *eng, struct sl_conn *c, const uint8_t *data, uint32_t len)
{
	struct fast_conn *f = fc(c);
	const uint8_t *buf = data;
	uint32_t blen = len, old = f->req.len, rest;
	bool held = false;
	int64_t used;

	if (f->req.len) {
		if (!reserve(&f->req, len))
			return false;
		if (len)
			memcpy(f->req.buf + f->req.len, data, len);
		f->req.len += len;
		buf = f->req.buf;
		blen = f->req.len;
		held = true;
	}
	used = serve(eng, c, buf, blen);
	if (used < 0) {
		if (held)
			f->req.len = old;
		return false;
	}
	if (f->closing || f->mode == FAST_STUCK) {
		/* after "Connection: close" ignored; or all given to Python */
		f->req.len = 0;
		return true;
	}
	/* keep what is left: an incomplete request, or what follows Python's */
	rest = blen - (uint32_t)used;
	if (held) {
		memmove(f->req.buf, f->req.buf + used, rest);
		f->req.len = rest;
	} else if (rest) {
		if (!reserve(&f->req, rest))
			return false;
		memcpy(f->req.buf, buf + used, rest);
		f->req.len = rest;
	}
	if (f->mode == FAST_PYTHON) {
		if (f->req.len > FAST_MAX_BACKLOG)
			stay(eng, c, HF_STAY_BACKLOG);
		return true;
	}
	/* keep-alive counts from here; the timer is moved only when it fires
	 * (fast_idle), not per request */
	f->active_us = eng->now_us;
	if (eng->stat && eng->stat->keepalive_ms && !c->timer[T_KEEPALIVE])
		timer_set(eng, c, T_KEEPALIVE,
			  eng->now_us + (uint64_t)eng->stat->keepalive_ms * 1000);
	return true;
}

/* Input while Python has a request: its body goes on, the rest waits. */
static bool python_input(struct sl_engine *eng, struct sl_conn *c, const uint8_t *data,
			 uint32_t len)
{
	struct fast_conn *f = fc(c);
	uint32_t body = f->to_python < len ? (uint32_t)f->to_python : len;

	if (len > body && f->req.len + (len - body) > FAST_MAX_BACKLOG) {
		if (!conn_to_python(eng, c, data, body))
			return false;
		f->to_python -= body;
		stay(eng, c, HF_STAY_BACKLOG);
		/* after what was held, as any later input */
		return conn_deliver(eng, c, data + body, len - body);
	}
	/* room first: the bytes are taken whole or not at all */
	if (!reserve(&f->req, len - body) || !conn_to_python(eng, c, data, body))
		return false;
	f->to_python -= body;
	if (len > body) {
		memcpy(f->req.buf + f->req.len, data + body, len - body);
		f->req.len += len - body;
	}
	if (!f->to_python && f->resp && f->resp->state == HF_DONE)
		conn_app_later(eng, c);
	return true;
}

/* tcp_app.input: in-order bytes of a connection whose input is ours. */
static bool fast_input(struct sl_engine *eng, struct sl_conn *c, const uint8_t *data,
		       uint32_t len)
{
	struct fast_conn *f = fc(c);

	if (f->closing)
		return true;	/* after "Connection: close": ignored */
	switch (f->mode) {
	case FAST_OWN:
		return take(eng, c, data, len);
	case FAST_PYTHON:
		return python_input(eng, c, data, len);
	default:
		/* Python's, behind input not given yet (no memory then) */
		if (!reserve(&f->req, len))
			return false;
		memcpy(f->req.buf + f->req.len, data, len);
		f->req.len += len;
		conn_app_later(eng, c);
		return true;
	}
}

/* tcp_app.eof: the peer sent FIN on a connection whose input is ours. */
static void fast_eof(struct sl_engine *eng, struct sl_conn *c)
{
	struct fast_conn *f = fc(c);

	if (f->closing)
		return;
	if (f->mode != FAST_OWN) {
		/* Python has (or will have) the connection: its EOF comes
		 * after what it was given */
		f->eof_held = true;
		if (f->mode == FAST_PYTHON)
			stay(eng, c, HF_STAY_EOF);
		else
			give_held(eng, c);
		return;
	}
	if (f->req.len) {
		/* a request cut short: let aiohttp answer it as it would */
		if (hand_for_good(eng, c, f->req.buf, f->req.len, HF_STAY_EOF)) {
			c->eof_pending = true;
			return;
		}
	}
	close_when_done(eng, c);
}

/*
 * tcp_app.output: Python's answer to the request it has, read as it is
 * queued.  Complete and nothing asked to close: the connection comes back
 * at the next poll (fast_later), where a write in between still counts
 * (more bytes than announced).
 */
static void fast_output(struct sl_engine *eng, struct sl_conn *c, const uint8_t *data,
			uint32_t len)
{
	struct fast_conn *f = fc(c);
	int st;

	if (!f || f->mode != FAST_PYTHON || !f->resp)
		return;
	st = hf_response_feed(f->resp, data, len);
	if (st == HF_STAY)
		stay(eng, c, (enum hf_stay)f->resp->stay);
	else if (st == HF_DONE && !f->to_python)
		conn_app_later(eng, c);
}

/* tcp_app.later: give held input to Python, or take the connection back. */
static void fast_later(struct sl_engine *eng, struct sl_conn *c)
{
	struct fast_conn *f = fc(c);

	if (!f)
		return;
	if (f->mode == FAST_STUCK) {
		if (f->req.len || f->eof_held)
			give_held(eng, c);
		return;
	}
	if (f->mode == FAST_OWN) {
		if (f->closing && !conn_python_gone(eng, c))
			conn_app_later(eng, c);
		return;
	}
	if (f->mode != FAST_PYTHON || !f->resp || f->resp->state != HF_DONE || f->to_python)
		return;
	/* Python closed meanwhile, or its server stopped listening */
	if (c->detached || c->fin_queued || !listener_by_id(eng, c->listener)) {
		stay(eng, c, HF_STAY_CLOSE);
		return;
	}
	/* it did not read all it was given (paused) */
	if (c->rxq.len || c->eof_pending) {
		stay(eng, c, HF_STAY_BACKLOG);
		return;
	}
	/* a short write: Python has more to send than the response was */
	if (c->want_writable) {
		stay(eng, c, HF_STAY_EXTRA_BYTES);
		return;
	}
	/* back: Python's transport stays, idle, until its next request (or
	 * until it closes it: then the next one comes with a new ACCEPT) */
	free(f->resp);
	f->resp = NULL;
	f->mode = FAST_OWN;
	eng->ctr.fast_handbacks++;
	f->active_us = eng->now_us;
	if (eng->stat && eng->stat->keepalive_ms)
		timer_set(eng, c, T_KEEPALIVE,
			  eng->now_us + (uint64_t)eng->stat->keepalive_ms * 1000);
	/* the requests that waited: answered, or the next one handed */
	if (f->req.len && !take(eng, c, NULL, 0))
		conn_app_later(eng, c);
}

/* tcp_app.idle: idle too long between requests (aiohttp's
 * keepalive_timeout): close.  A connection still sending or receiving a
 * request is not idle.  Python's connections keep TCP's own keep-alive. */
static bool fast_idle(struct sl_engine *eng, struct sl_conn *c)
{
	uint64_t ka_us = eng->stat ? (uint64_t)eng->stat->keepalive_ms * 1000 : 0;
	struct fast_conn *f = fc(c);

	if (!f || f->mode != FAST_OWN)
		return false;
	if (f->closing)
		return true;
	if (ka_us && eng->now_us < f->active_us + ka_us) {
		/* input came since it was armed: idle from the last one */
		timer_set(eng, c, T_KEEPALIVE, f->active_us + ka_us);
		return true;
	}
	if (!f->head && !f->req.len) {
		close_when_done(eng, c);
		return true;
	}
	if (ka_us)
		timer_set(eng, c, T_KEEPALIVE, eng->now_us + ka_us);
	return true;
}

/* The server stopped listening: finish what was asked, then close. */
static void fast_shutdown(struct sl_engine *eng, struct sl_conn *c)
{
	if (fast_holds(c) && !fc(c)->closing && !fc(c)->req.len)
		close_when_done(eng, c);
}

/*
 * Queues the next segment of the first pending response (called by
 * tcp_output when nothing unsent is queued).  Returns true if it queued
 * something.
 */
static bool fast_fill(struct sl_engine *eng, struct sl_conn *c)
{
	struct fast_conn *f = fc(c);
	struct fast_resp *fr = f ? f->head : NULL;
	uint32_t mss = c->mss;

	if (!fr)
		return false;
	if (fr->hdr_done < fr->hdr_len) {
		/* the header, and as much body as fits beside it, copied */
		uint32_t h = fr->hdr_len - fr->hdr_done, b = 0;
		int n;

		if (h > mss)
			h = mss;
		if (fr->e && h < mss) {
			b = fr->body_end - fr->body_next;
			if (b > mss - h)
				b = mss - h;
		}
		n = tcp_queue_segment(eng, c, fr->hdr + fr->hdr_done, h,
				      fr->e ? fr->e->body + fr->body_next : NULL, b);
		if (n < 0)
			return false;	/* no frame now: starved, retried */
		fr->hdr_done += h;
		fr->body_next += b;
	} else if (fr->body_next < fr->body_end) {
		uint32_t b = fr->body_end - fr->body_next;
		uint32_t first = fr->hdr_len < mss ? mss - fr->hdr_len : 0;

		if (b > mss)
			b = mss;
		if (tcp_queue_static(eng, c, &fr->e->payload, fr->body_next, b, first,
				     static_chunk_csum(fr->e, first, mss, fr->body_next, b)) < 0)
			return false;
		fr->body_next += b;
		eng->ctr.fast_body_segments++;
	}
	if (fr->hdr_done == fr->hdr_len && fr->body_next >= fr->body_end) {
		bool close = fr->close_after;

		f->head = fr->next;
		if (!f->head)
			f->tail = NULL;
		f->nresp--;
		resp_free(eng, fr);
		if (close || (f->closing && !f->head))
			conn_app_close(eng, c);
		else if (!f->head && f->mode != FAST_OWN)
			conn_writable_later(eng, c);	/* Python's turn to write */
	}
	return true;
}

const struct tcp_app http_fast_app = {
	.attach = fast_attach,
	.input = fast_input,
	.eof = fast_eof,
	.fill = fast_fill,
	.owns = fast_owns,
	.holds = fast_holds,
	.pending = fast_pending,
	.idle = fast_idle,
	.shutdown = fast_shutdown,
	.release = fast_release,
	.output = fast_output,
	.later = fast_later,
};

int sl_listen_set_fast(struct sl_engine *eng, uint32_t id, int flags)
{
	struct tcp_listener *l = listener_by_id(eng, id);

	if (!l)
		return -EBADF;
	if (flags & ~(SL_FAST_ON | SL_FAST_STAY))
		return -EINVAL;
	l->app = flags & SL_FAST_ON ? &http_fast_app : NULL;
	l->app_flags = (uint32_t)flags;
	return 0;
}
