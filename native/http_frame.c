/* SPDX-License-Identifier: MIT */
/*
 * http_frame.c - RFC 9112 §6.3 message framing for hand-back (http_fast.c).
 *
 * hf_request frames one request at the front of the fast path's input:
 * the header, and a Content-Length body.  hf_response reads the bytes
 * Python writes in answer, as they are written, and says when the final
 * response is complete.  Whenever the end of a message cannot be known
 * for sure (no length, both lengths, a malformed line, more bytes than
 * announced), the answer is "stay": the connection remains Python's, and
 * nothing here ever guesses.
 *
 * All input comes from the wire or from the application: every index is
 * bounded by the length given, never by a terminator.
 */
#include <stddef.h>
#include <string.h>

#include "http_frame.h"
#include "http_token.h"

/* HTTP-version = "HTTP/1." DIGIT, 0 or 1 here; -1 for anything else */
static int http_minor(const uint8_t *p, uint32_t len)
{
	if (len != 8 || memcmp(p, "HTTP/1.", 7) != 0 || (p[7] != '0' && p[7] != '1'))
		return -1;
	return p[7] - '0';
}

/* ---- requests --------------------------------------------------------- */

int hf_request(const uint8_t *buf, uint32_t len, uint32_t max, struct hf_request *out)
{
	struct http_conn_tokens ct = { 0 };
	uint32_t end, i, line, sp1, sp2, nl, vl;
	const uint8_t *v;
	bool seen_cl = false;
	int minor;

	memset(out, 0, sizeof(*out));
	/* RFC 9112 §2.2: the header ends at the first empty line */
	for (end = 3; end < len && end < max; end++)
		if (buf[end - 3] == '\r' && buf[end - 2] == '\n' && buf[end - 1] == '\r' &&
		    buf[end] == '\n')
			break;
	if (end >= max)
		return -HF_STAY_REQUEST_UNFRAMED;
	if (end >= len)
		return 0;
	end++;

	/* RFC 9112 §3: method SP request-target SP HTTP-version CRLF */
	for (sp1 = 0; sp1 < end && http_is_tchar(buf[sp1]); sp1++)
		;
	if (sp1 == 0 || sp1 >= end || buf[sp1] != ' ')
		return -HF_STAY_REQUEST_UNFRAMED;
	for (sp2 = sp1 + 1; sp2 < end && buf[sp2] > 0x20 && buf[sp2] < 0x7f; sp2++)
		;
	if (sp2 == sp1 + 1 || sp2 + 10 > end || buf[sp2] != ' ')
		return -HF_STAY_REQUEST_UNFRAMED;
	minor = http_minor(buf + sp2 + 1, 8);
	if (minor < 0 || buf[sp2 + 9] != '\r' || buf[sp2 + 10] != '\n')
		return -HF_STAY_REQUEST_UNFRAMED;
	/* RFC 9110 §9.3.6: CONNECT makes a tunnel; it never comes back */
	if (sp1 == 7 && memcmp(buf, "CONNECT", 7) == 0)
		return -HF_STAY_UPGRADE;
	out->head = sp1 == 4 && memcmp(buf, "HEAD", 4) == 0;

	for (line = i = sp2 + 11; line + 2 < end; line = i) {
		uint32_t eol = line;

		while (eol + 1 < end && !(buf[eol] == '\r' && buf[eol + 1] == '\n'))
			eol++;
		if (eol + 1 >= end)
			return -HF_STAY_REQUEST_UNFRAMED;
		i = eol + 2;
		if (!http_split_field(buf + line, eol - line, &nl, &v, &vl))
			return -HF_STAY_REQUEST_UNFRAMED;
		if (http_name_is(buf + line, nl, "content-length")) {
			/* RFC 9112 §6.3 (5): an invalid length is unrecoverable;
			 * repeated ones we do not reconcile */
			if (seen_cl || !http_parse_u64(v, vl, &out->body_len))
				return -HF_STAY_REQUEST_UNFRAMED;
			seen_cl = true;
		} else if (http_name_is(buf + line, nl, "transfer-encoding")) {
			return -HF_STAY_REQUEST_CHUNKED;
		} else if (http_name_is(buf + line, nl, "upgrade")) {
			return -HF_STAY_UPGRADE;
		} else if (http_name_is(buf + line, nl, "connection")) {
			http_each_token(v, vl, http_conn_token, &ct);
		}
	}
	if (i + 2 != end)
		return -HF_STAY_REQUEST_UNFRAMED;
	/* RFC 9112 §9.3: HTTP/1.1 persists unless "close"; 1.0 only with keep-alive */
	out->close = ct.close || (minor == 0 && !ct.keepalive);
	out->hdr_len = end;
	return (int)end;
}

/* ---- responses -------------------------------------------------------- */

static void fields_reset(struct hf_response *r)
{
	r->status = 0;
	r->minor = 0;
	r->close = r->keepalive = false;
	r->te = r->te_chunked = false;
	r->cl_bad = false;
	r->ncl = 0;
	r->cl = 0;
	r->left = 0;
}

void hf_response_init(struct hf_response *r, bool head, bool req_close)
{
	/* all but the line buffer, which line_len = 0 makes empty */
	memset(r, 0, offsetof(struct hf_response, line));
	r->state = HF_STATUS;
	r->head = head;
	r->req_close = req_close;
}

static int stay(struct hf_response *r, enum hf_stay why)
{
	r->state = HF_STAY;
	r->stay = (uint8_t)why;
	return HF_STAY;
}

/* The final response is complete: the connection may come back unless
 * either side asked for close (RFC 9112 §9.3, §9.6). */
static int done(struct hf_response *r)
{
	if (r->req_close || r->close || (r->minor == 0 && !r->keepalive))
		return stay(r, HF_STAY_CLOSE);
	r->state = HF_DONE;
	return HF_DONE;
}

/* RFC 9112 §4: status-line = HTTP-version SP status-code SP [ reason-phrase ] */
static int status_line(struct hf_response *r, const uint8_t *p, uint32_t len)
{
	int minor;
	uint32_t k;

	if (len < 12 || p[8] != ' ' || (len > 12 && p[12] != ' '))
		return stay(r, HF_STAY_MALFORMED);
	minor = http_minor(p, 8);
	if (minor < 0 || p[9] < '1' || p[9] > '9' || p[10] < '0' || p[10] > '9' ||
	    p[11] < '0' || p[11] > '9')
		return stay(r, HF_STAY_MALFORMED);
	for (k = 13; k < len; k++)
		if ((p[k] < 0x20 && p[k] != '\t') || p[k] == 0x7f)
			return stay(r, HF_STAY_MALFORMED);
	fields_reset(r);
	r->minor = (uint8_t)minor;
	r->status = (uint16_t)((p[9] - '0') * 100 + (p[10] - '0') * 10 + (p[11] - '0'));
	r->state = HF_FIELDS;
	return HF_FIELDS;
}

static void te_token(void *arg, const uint8_t *t, uint32_t tl)
{
	/* only the last coding counts: each token overwrites it */
	*(bool *)arg = http_name_is(t, tl, "chunked");
}

/* RFC 9112 §6.3: how the content of this response is delimited. */
static int header_end(struct hf_response *r)
{
	/* (3): both is a smuggling sign; we do not choose between them */
	if (r->ncl && r->te)
		return stay(r, HF_STAY_CL_AND_TE);
	/* RFC 9110 §15.2.2: after 101 the connection is another protocol */
	if (r->status == 101)
		return stay(r, HF_STAY_UPGRADE);
	/* (1): 1xx are interim (100, 102, 103): the final response follows */
	if (r->status < 200) {
		r->state = HF_STATUS;
		return HF_STATUS;
	}
	/* (1): HEAD, 204 and 304 end at the blank line */
	if (r->head || r->status == 204 || r->status == 304)
		return done(r);
	/* (4): chunked last, else read until close */
	if (r->te) {
		if (!r->te_chunked)
			return stay(r, HF_STAY_CLOSE_DELIMITED);
		r->state = HF_CHUNK_SIZE;
		return HF_CHUNK_SIZE;
	}
	/* (5), (6) */
	if (r->ncl) {
		if (r->ncl > 1 || r->cl_bad)
			return stay(r, HF_STAY_BAD_LENGTH);
		if (!r->cl)
			return done(r);
		r->left = r->cl;
		r->state = HF_BODY;
		return HF_BODY;
	}
	/* (8): a response without either is delimited by the close */
	return stay(r, HF_STAY_CLOSE_DELIMITED);
}

static int field_line(struct hf_response *r, const uint8_t *p, uint32_t len)
{
	struct http_conn_tokens ct = { 0 };
	const uint8_t *v;
	uint32_t nl, vl;
	bool chunked = false;

	if (len == 0)
		return header_end(r);
	if (!http_split_field(p, len, &nl, &v, &vl))
		return stay(r, HF_STAY_MALFORMED);
	if (http_name_is(p, nl, "content-length")) {
		r->ncl++;
		if (!http_parse_u64(v, vl, &r->cl))
			r->cl_bad = true;
	} else if (http_name_is(p, nl, "transfer-encoding")) {
		if (!http_each_token(v, vl, te_token, &chunked))
			return stay(r, HF_STAY_MALFORMED);
		r->te = true;
		r->te_chunked = chunked;
	} else if (http_name_is(p, nl, "connection")) {
		http_each_token(v, vl, http_conn_token, &ct);
		r->close |= ct.close;
		r->keepalive |= ct.keepalive;
	}
	return HF_FIELDS;
}

/* RFC 9112 §7.1: chunk-size [ chunk-ext ] CRLF */
static int chunk_size_line(struct hf_response *r, const uint8_t *p, uint32_t len)
{
	uint64_t size = 0;
	uint32_t i;

	for (i = 0; i < len && http_hexval(p[i]) >= 0; i++) {
		if (i == 15)
			return stay(r, HF_STAY_BAD_CHUNK);
		size = size << 4 | (uint64_t)http_hexval(p[i]);
	}
	if (i == 0)
		return stay(r, HF_STAY_BAD_CHUNK);
	/* §7.1.1: BWS ";" extensions; anything else is not a chunk line */
	while (i < len && (p[i] == ' ' || p[i] == '\t'))
		i++;
	if (i < len && p[i] != ';')
		return stay(r, HF_STAY_BAD_CHUNK);
	for (; i < len; i++)
		if ((p[i] < 0x20 && p[i] != '\t') || p[i] == 0x7f)
			return stay(r, HF_STAY_BAD_CHUNK);
	if (!size) {
		r->state = HF_TRAILER;	/* §7.1.2: last-chunk, then trailers */
		return HF_TRAILER;
	}
	r->left = size;
	r->state = HF_CHUNK_DATA;
	return HF_CHUNK_DATA;
}

/* One complete line (its CRLF stripped) in a line-reading state. */
static int line_done(struct hf_response *r, const uint8_t *p, uint32_t len)
{
	const uint8_t *v;
	uint32_t nl, vl;

	switch (r->state) {
	case HF_STATUS:
		return status_line(r, p, len);
	case HF_FIELDS:
		return field_line(r, p, len);
	case HF_CHUNK_SIZE:
		return chunk_size_line(r, p, len);
	case HF_CHUNK_END:
		if (len)
			return stay(r, HF_STAY_BAD_CHUNK);
		r->state = HF_CHUNK_SIZE;
		return HF_CHUNK_SIZE;
	case HF_TRAILER:
		if (!len)
			return done(r);
		if (!http_split_field(p, len, &nl, &v, &vl))
			return stay(r, HF_STAY_BAD_CHUNK);
		return HF_TRAILER;
	default:
		return stay(r, HF_STAY_MALFORMED);
	}
}

int hf_response_feed(struct hf_response *r, const uint8_t *data, uint32_t len)
{
	uint32_t i = 0;

	while (i < len) {
		switch (r->state) {
		case HF_STAY:
			return HF_STAY;
		case HF_DONE:
			return stay(r, HF_STAY_EXTRA_BYTES);
		case HF_BODY:
		case HF_CHUNK_DATA: {
			uint64_t n = len - i < r->left ? len - i : r->left;

			i += (uint32_t)n;
			r->left -= n;
			if (r->left)
				break;
			if (r->state == HF_BODY)
				done(r);
			else
				r->state = HF_CHUNK_END;
			break;
		}
		default:
			/* a line: file bytes cannot be one */
			if (!data)
				return stay(r, HF_STAY_MALFORMED);
			while (i < len && data[i] != '\n') {
				if (r->line_len == HF_LINE_MAX)
					return stay(r, r->state >= HF_CHUNK_SIZE ? HF_STAY_BAD_CHUNK
										 : HF_STAY_MALFORMED);
				r->line[r->line_len++] = data[i++];
			}
			if (i == len)
				break;
			i++;	/* the LF */
			/* RFC 9112 §2.2: lines end in CRLF; a bare LF we do not trust */
			if (!r->line_len || r->line[r->line_len - 1] != '\r')
				return stay(r, r->state >= HF_CHUNK_SIZE ? HF_STAY_BAD_CHUNK
									 : HF_STAY_MALFORMED);
			{
				uint32_t n = r->line_len - 1;

				r->line_len = 0;
				/* a CR inside the line is not a field value byte */
				if (memchr(r->line, '\r', n))
					return stay(r, r->state >= HF_CHUNK_SIZE ? HF_STAY_BAD_CHUNK
										 : HF_STAY_MALFORMED);
				line_done(r, r->line, n);
			}
			break;
		}
	}
	return r->state;
}
