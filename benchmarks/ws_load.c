/* SPDX-License-Identifier: MIT */
/*
 * ws_load.c - a closed-loop WebSocket echo load generator: the client of
 * the suite's ws-echo workload (benchmarks/suite.py), which wrk cannot be.
 *
 *   ws_load [-c CONNS] [-d SECONDS] [-w SECONDS] [-n MESSAGES] [-t SECONDS]
 *           [-b] [-s] HOST PORT [PATH]
 *
 * Opens CONNS connections (non-blocking, one epoll), does the RFC 6455 §4
 * opening handshake on each (GET PATH with Upgrade: websocket, a random
 * Sec-WebSocket-Key, and checks the 101 answer and its
 * Sec-WebSocket-Accept), then, once every connection is open, each one
 * sends one masked text frame (binary with -b) holding "Hello, world!"
 * (13 bytes), waits for the whole echo, checks it byte for byte and sends
 * the next: -w SECONDS of warm-up (default 1), then -d SECONDS measured
 * (default 5; -n stops the measured phase after MESSAGES echoes).  Then
 * every connection closes with the closing handshake (§7.1.2).
 *
 * With -s (the suite's way), the warm-up ends by letting the messages in
 * flight come back, then "WARM" is printed and the measured phase starts
 * when a line arrives on stdin: the caller reads the server's CPU time at
 * that moment, with every connection open and idle.
 *
 * Prints one line of JSON on stdout: messages, seconds, msgs_per_s,
 * latency_us (p50 p90 p99 p999 p9999 mean max, of each message's round
 * trip, from a log-linear histogram within 1%), errors by kind, the
 * client's own CPU seconds over the measured phase and its busy fraction.
 *
 * Exit status: 0 when the run completed with no error; 1 after a
 * connection failed (connect, read, write, timeout: counted in "errors",
 * the JSON is still printed); 1 at once, with a message on stderr, on a
 * failed handshake, a protocol error or an echo that differs from what
 * was sent (the checker: a benchmark of wrong answers is worth nothing);
 * 2 for bad arguments.
 *
 * Frames from the server are parsed from a per-connection buffer, so a
 * frame split across reads, or several in one read, are both fine; writes
 * that the socket takes only in part are finished on EPOLLOUT.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MSG "Hello, world!"
#define MSG_LEN (sizeof(MSG) - 1)
#define WBUF 1024		/* the handshake request, or a frame + a pong + a close */
#define RBUF 4096		/* the handshake answer's head, or frames of <= 135 bytes */
#define CTRL_MAX 125		/* RFC 6455 §5.5: control frame payloads */
#define MAX_CONNS 65536
#define CLOSE_WAIT_NS (2 * NS)	/* the closing handshake's deadline */
#define NS 1000000000ull
/* RFC 6455 §1.3: the GUID appended to the key before hashing */
#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

enum { OP_CONT = 0x0, OP_TEXT = 0x1, OP_BINARY = 0x2, OP_CLOSE = 0x8, OP_PING = 0x9,
       OP_PONG = 0xA };

enum conn_state {
	C_CONNECTING,		/* connect() in progress */
	C_HANDSHAKE,		/* request sent (or going), waiting for the 101 */
	C_OPEN,			/* echoing */
	C_CLOSING,		/* our Close sent, waiting for the server's */
	C_CLOSED,		/* both Close frames seen, waiting for the server's FIN */
	C_DONE,			/* closed cleanly */
	C_DEAD,			/* failed (counted in errors) */
};

struct conn {
	int fd;
	int id;
	enum conn_state state;
	bool waiting;		/* a message is out and its echo not complete */
	bool want_out;		/* EPOLLOUT is armed */
	uint64_t sent_ns;	/* when the message in flight was queued */
	char accept[32];	/* the Sec-WebSocket-Accept we expect (28 chars) */
	int msg_op;		/* opcode of the echo being assembled, 0: none */
	size_t msg_len;
	uint8_t msg[MSG_LEN];	/* the echo so far, across continuation frames */
	size_t woff, wlen;
	uint8_t wbuf[WBUF];
	size_t rlen;
	uint8_t rbuf[RBUF];
};

enum phase { P_OPENING, P_WARMUP, P_DRAIN, P_MEASURE, P_CLOSING, P_END };

/* latencies in ns: exact below 128, then 128 buckets per power of two */
#define HIST_SUB_BITS 7
#define HIST_SUB (1u << HIST_SUB_BITS)
#define HIST_BUCKETS ((64 - HIST_SUB_BITS + 1) * HIST_SUB)

struct hist {
	uint64_t count, sum, max;
	uint64_t bucket[HIST_BUCKETS];
};

enum { E_CONNECT, E_READ, E_WRITE, E_TIMEOUT, E_KINDS };
static const char *const error_names[E_KINDS] = { "connect", "read", "write", "timeout" };

struct load {
	/* options */
	int conns;
	double warmup_s, duration_s, timeout_s;
	uint64_t max_messages;	/* 0: no limit */
	int opcode;		/* OP_TEXT or OP_BINARY */
	bool sync;
	const char *host, *port, *path;
	/* state */
	int epfd;
	struct conn *conn;
	struct addrinfo *addr;
	enum phase phase;
	uint64_t phase_end_ns, last_scan_ns;
	int open, settled;	/* connections open; connections DONE or DEAD */
	int inflight;
	uint64_t started;	/* messages sent in the measured phase */
	uint64_t messages;	/* echoes completed in the measured phase */
	uint64_t measure_start_ns, measure_end_ns;
	double cpu0_s, cpu_s;
	uint64_t errors[E_KINDS];
	struct hist hist;
	uint8_t pool[4096];	/* random bytes: keys and masking keys */
	size_t pool_pos;
};

/* ---- small helpers ------------------------------------------------------------ */

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * NS + (uint64_t)ts.tv_nsec;
}

static double cpu_seconds(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
	       (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

/* Writes at most 64 bytes of data as a C-ish literal into out (>= 300 bytes). */
static const char *escape(const uint8_t *data, size_t len, char *out, size_t cap)
{
	size_t o = 0;

	for (size_t i = 0; i < len && i < 64 && o + 8 < cap; i++) {
		uint8_t b = data[i];
		if (b >= 0x20 && b < 0x7f && b != '"' && b != '\\')
			out[o++] = (char)b;
		else
			o += (size_t)snprintf(out + o, cap - o, "\\x%02x", b);
	}
	if (len > 64 && o + 4 < cap) {
		memcpy(out + o, "...", 3);
		o += 3;
	}
	out[o] = '\0';
	return out;
}

/* A failed handshake, a protocol error or a wrong echo: say so and stop. */
static _Noreturn void fail(const struct conn *c, const char *fmt, ...)
{
	va_list ap;

	fflush(stdout);
	if (c != NULL)
		fprintf(stderr, "ws_load: connection %d: ", c->id);
	else
		fputs("ws_load: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(1);
}

/* Random bytes from the kernel, 4 KiB per getrandom(): RFC 6455 §5.3 wants
 * each masking key "derived from a strong source of entropy". */
static void random_bytes(struct load *L, uint8_t *out, size_t n)
{
	while (n > 0) {
		if (L->pool_pos == sizeof(L->pool)) {
			size_t got = 0;
			while (got < sizeof(L->pool)) {
				ssize_t r = getrandom(L->pool + got, sizeof(L->pool) - got, 0);
				if (r < 0 && errno != EINTR)
					fail(NULL, "getrandom: %s", strerror(errno));
				if (r > 0)
					got += (size_t)r;
			}
			L->pool_pos = 0;
		}
		size_t take = sizeof(L->pool) - L->pool_pos;
		if (take > n)
			take = n;
		memcpy(out, L->pool + L->pool_pos, take);
		L->pool_pos += take;
		out += take;
		n -= take;
	}
}

/* ---- the latency histogram ----------------------------------------------------- */

static size_t hist_index(uint64_t v)
{
	if (v < HIST_SUB)
		return (size_t)v;
	unsigned msb = 63u - (unsigned)__builtin_clzll(v);	/* >= HIST_SUB_BITS */
	unsigned shift = msb - HIST_SUB_BITS;
	return (size_t)(shift + 1) * HIST_SUB + (size_t)((v >> shift) - HIST_SUB);
}

/* The middle of bucket i, in ns. */
static double hist_value(size_t i)
{
	if (i < HIST_SUB)
		return (double)i;
	unsigned shift = (unsigned)(i / HIST_SUB) - 1;
	uint64_t low = (uint64_t)(HIST_SUB + i % HIST_SUB) << shift;
	return (double)low + (double)((uint64_t)1 << shift) / 2.0;
}

static void hist_add(struct hist *h, uint64_t v)
{
	h->bucket[hist_index(v)]++;
	h->count++;
	h->sum += v;
	if (v > h->max)
		h->max = v;
}

/* The value at quantile q (0..1), in µs; never above the maximum seen. */
static double hist_quantile_us(const struct hist *h, double q)
{
	if (h->count == 0)
		return 0.0;
	uint64_t rank = (uint64_t)(q * (double)h->count + 0.999999);
	if (rank < 1)
		rank = 1;
	uint64_t seen = 0;
	for (size_t i = 0; i < HIST_BUCKETS; i++) {
		seen += h->bucket[i];
		if (seen >= rank) {
			double v = hist_value(i);
			return (v > (double)h->max ? (double)h->max : v) / 1000.0;
		}
	}
	return (double)h->max / 1000.0;
}

/* ---- sending -------------------------------------------------------------------- */

static void set_events(struct load *L, struct conn *c, bool out)
{
	struct epoll_event ev = { .events = EPOLLIN | (out ? EPOLLOUT : 0u), .data.ptr = c };

	if (c->want_out == out)
		return;
	if (epoll_ctl(L->epfd, EPOLL_CTL_MOD, c->fd, &ev) < 0)
		fail(c, "epoll_ctl: %s", strerror(errno));
	c->want_out = out;
}

static void conn_dead(struct load *L, struct conn *c, int kind, const char *what, int err)
{
	if (c->state == C_DEAD || c->state == C_DONE)
		return;
	fprintf(stderr, "ws_load: connection %d: %s%s%s\n", c->id, what, err ? ": " : "",
		err ? strerror(err) : "");
	L->errors[kind]++;
	if (c->state >= C_OPEN)
		L->open--;
	if (c->waiting)
		L->inflight--;
	c->waiting = false;
	c->state = C_DEAD;
	close(c->fd);		/* also removes it from the epoll set */
	c->fd = -1;
	L->settled++;
}

/* Sends what the write buffer holds; the rest waits for EPOLLOUT. */
static void flush(struct load *L, struct conn *c)
{
	while (c->woff < c->wlen) {
		ssize_t n = send(c->fd, c->wbuf + c->woff, c->wlen - c->woff,
				 MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n > 0) {
			c->woff += (size_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			set_events(L, c, true);
			return;
		}
		conn_dead(L, c, E_WRITE, "send", n < 0 ? errno : EPIPE);
		return;
	}
	c->woff = c->wlen = 0;
	set_events(L, c, false);
}

/* Room for n more bytes at the end of the write buffer. */
static uint8_t *wbuf_reserve(struct conn *c, size_t n)
{
	if (c->woff > 0) {
		memmove(c->wbuf, c->wbuf + c->woff, c->wlen - c->woff);
		c->wlen -= c->woff;
		c->woff = 0;
	}
	if (n > WBUF - c->wlen)
		fail(c, "write buffer full (the server sends pings faster than it reads)");
	return c->wbuf + c->wlen;
}

/* RFC 6455 §5.2/§5.3: one final frame, masked with a fresh key, payload <= 125. */
static void queue_frame(struct load *L, struct conn *c, int opcode, const uint8_t *payload,
			size_t len)
{
	uint8_t mask[4];
	uint8_t *p = wbuf_reserve(c, 6 + len);

	random_bytes(L, mask, sizeof(mask));
	p[0] = (uint8_t)(0x80 | opcode);
	p[1] = (uint8_t)(0x80 | len);
	memcpy(p + 2, mask, 4);
	for (size_t i = 0; i < len; i++)
		p[6 + i] = payload[i] ^ mask[i & 3];
	c->wlen += 6 + len;
}

/* The next message of a connection, if the phase wants one. */
static void maybe_send(struct load *L, struct conn *c, uint64_t now)
{
	if (c->state != C_OPEN || c->waiting)
		return;
	if (L->phase == P_MEASURE) {
		if (L->max_messages && L->started >= L->max_messages)
			return;
		L->started++;
	} else if (L->phase != P_WARMUP) {
		return;
	}
	queue_frame(L, c, L->opcode, (const uint8_t *)MSG, MSG_LEN);
	c->waiting = true;
	c->sent_ns = now;
	L->inflight++;
	flush(L, c);
}

/* ---- the opening handshake (RFC 6455 §4.1) ---------------------------------------- */

static void start_handshake(struct load *L, struct conn *c)
{
	uint8_t key_raw[16], digest[SHA_DIGEST_LENGTH];
	char key[32], both[32 + sizeof(WS_GUID)];
	bool v6 = strchr(L->host, ':') != NULL;

	/* "a nonce consisting of a randomly selected 16-byte value that has
	 * been base64-encoded" */
	random_bytes(L, key_raw, sizeof(key_raw));
	EVP_EncodeBlock((unsigned char *)key, key_raw, (int)sizeof(key_raw));	/* 24 chars */
	/* §4.2.2: the accept value is base64(SHA-1(key + GUID)) */
	int n = snprintf(both, sizeof(both), "%s%s", key, WS_GUID);
	if (n < 0 || (size_t)n >= sizeof(both))
		fail(c, "key too long");
	SHA1((const unsigned char *)both, (size_t)n, digest);
	EVP_EncodeBlock((unsigned char *)c->accept, digest, (int)sizeof(digest));	/* 28 chars */

	uint8_t *p = wbuf_reserve(c, 0);
	n = snprintf((char *)p, WBUF - c->wlen,
		     "GET %s HTTP/1.1\r\n"
		     "Host: %s%s%s:%s\r\n"
		     "Upgrade: websocket\r\n"
		     "Connection: Upgrade\r\n"
		     "Sec-WebSocket-Key: %s\r\n"
		     "Sec-WebSocket-Version: 13\r\n"
		     "\r\n",
		     L->path, v6 ? "[" : "", L->host, v6 ? "]" : "", L->port, key);
	if (n < 0 || (size_t)n >= WBUF - c->wlen)
		fail(c, "handshake request longer than %d bytes", WBUF);
	c->wlen += (size_t)n;
	c->state = C_HANDSHAKE;
	flush(L, c);
}

static bool span_ieq(const char *s, size_t len, const char *lit)
{
	return strlen(lit) == len && strncasecmp(s, lit, len) == 0;
}

/* Whether the comma-separated list s[0..len) holds token (any case). */
static bool has_token(const char *s, size_t len, const char *token)
{
	size_t i = 0;

	while (i < len) {
		size_t j = i;
		while (j < len && s[j] != ',')
			j++;
		size_t a = i, b = j;
		while (a < b && (s[a] == ' ' || s[a] == '\t'))
			a++;
		while (b > a && (s[b - 1] == ' ' || s[b - 1] == '\t'))
			b--;
		if (span_ieq(s + a, b - a, token))
			return true;
		i = j + 1;
	}
	return false;
}

/* Reads the answer's head once it is whole; returns the bytes it took,
 * 0 while incomplete.  Every failure is fatal: the client "MUST _Fail the
 * WebSocket Connection_". */
static size_t parse_handshake(struct conn *c)
{
	const char *head = (const char *)c->rbuf;
	const char *end = memmem(head, c->rlen, "\r\n\r\n", 4);
	char esc[300];

	if (end == NULL) {
		if (c->rlen == RBUF)
			fail(c, "handshake answer: no end of head in %d bytes", RBUF);
		return 0;
	}
	size_t head_len = (size_t)(end - head) + 4;
	const char *eol = memmem(head, head_len, "\r\n", 2);	/* found: end is one */
	size_t line_len = (size_t)(eol - head);

	/* §4.1: "If the status code received from the server is not 101, the
	 * client handles the response per HTTP procedures" -- here, fails */
	if (line_len < 12 || memcmp(head, "HTTP/1.1 101", 12) != 0 ||
	    (line_len > 12 && head[12] != ' '))
		fail(c, "handshake answer is not 101: \"%s\"",
		     escape(c->rbuf, line_len, esc, sizeof(esc)));
	bool upgrade = false, connection = false, accept = false;
	size_t pos = line_len + 2;
	while (pos < head_len - 2) {
		const char *line = head + pos;
		eol = memmem(line, head_len - pos, "\r\n", 2);
		line_len = (size_t)(eol - line);
		pos += line_len + 2;
		const char *colon = memchr(line, ':', line_len);
		if (colon == NULL || colon == line)
			fail(c, "handshake answer: malformed header line \"%s\"",
			     escape((const uint8_t *)line, line_len, esc, sizeof(esc)));
		size_t name_len = (size_t)(colon - line);
		const char *v = colon + 1, *v_end = line + line_len;
		while (v < v_end && (*v == ' ' || *v == '\t'))
			v++;
		while (v_end > v && (v_end[-1] == ' ' || v_end[-1] == '\t'))
			v_end--;
		size_t v_len = (size_t)(v_end - v);
		/* §4.1, the client's checks 2-6 of the server's answer */
		if (span_ieq(line, name_len, "Upgrade")) {
			upgrade = span_ieq(v, v_len, "websocket");
		} else if (span_ieq(line, name_len, "Connection")) {
			connection = has_token(v, v_len, "upgrade");
		} else if (span_ieq(line, name_len, "Sec-WebSocket-Accept")) {
			accept = v_len == strlen(c->accept) && memcmp(v, c->accept, v_len) == 0;
			if (!accept)
				fail(c, "Sec-WebSocket-Accept is \"%s\", expected \"%s\"",
				     escape((const uint8_t *)v, v_len, esc, sizeof(esc)), c->accept);
		} else if (span_ieq(line, name_len, "Sec-WebSocket-Extensions") ||
			   span_ieq(line, name_len, "Sec-WebSocket-Protocol")) {
			/* "indicates the use of an extension [subprotocol] that was not
			 * present in the client's handshake" */
			fail(c, "the server chose %.*s we did not offer", (int)name_len, line);
		}
	}
	if (!upgrade)
		fail(c, "handshake answer: no \"Upgrade: websocket\"");
	if (!connection)
		fail(c, "handshake answer: no \"Upgrade\" token in Connection");
	if (!accept)
		fail(c, "handshake answer: no Sec-WebSocket-Accept");
	return head_len;
}

/* ---- frames from the server (RFC 6455 §5) ------------------------------------------ */

static void maybe_close(struct load *L, struct conn *c);

static void on_echo(struct load *L, struct conn *c, uint64_t now)
{
	char got[300];

	if (!c->waiting)
		fail(c, "a message came that is no echo (none was in flight): \"%s\"",
		     escape(c->msg, c->msg_len, got, sizeof(got)));
	if (c->msg_op != L->opcode || c->msg_len != MSG_LEN || memcmp(c->msg, MSG, MSG_LEN) != 0)
		fail(c, "echo mismatch: sent %s \"%s\", got %s \"%s\" (%zu bytes)",
		     L->opcode == OP_TEXT ? "text" : "binary", MSG,
		     c->msg_op == OP_TEXT ? "text" : "binary",
		     escape(c->msg, c->msg_len, got, sizeof(got)), c->msg_len);
	c->waiting = false;
	c->msg_op = 0;
	c->msg_len = 0;
	L->inflight--;
	if (L->phase == P_MEASURE) {
		L->messages++;
		hist_add(&L->hist, now - c->sent_ns);
	}
	maybe_send(L, c, now);
	maybe_close(L, c);
}

static void on_close_frame(struct load *L, struct conn *c, const uint8_t *p, size_t len)
{
	char why[300];

	/* §5.5.1: a body, if any, starts with a 2-byte status code */
	if (len == 1)
		fail(c, "Close frame with a 1-byte body");
	if (c->state == C_CLOSING) {	/* the answer to ours */
		c->state = C_CLOSED;
		return;
	}
	(void)L;
	fail(c, "the server closed the WebSocket (code %d%s%s)",
	     len >= 2 ? (p[0] << 8) | p[1] : 1005, len > 2 ? ": " : "",
	     len > 2 ? escape(p + 2, len - 2, why, sizeof(why)) : "");
}

/* Every whole frame in the read buffer; a partial one stays for the next read. */
static void parse_frames(struct load *L, struct conn *c, uint64_t now)
{
	size_t pos = 0;

	while (c->fd >= 0 && c->rlen - pos >= 2) {
		const uint8_t *p = c->rbuf + pos;
		size_t avail = c->rlen - pos, hdr = 2;
		bool fin = p[0] & 0x80;
		int op = p[0] & 0x0f;
		uint64_t len = p[1] & 0x7f;

		/* §5.2: RSV1-3 "MUST be 0 unless an extension is negotiated" */
		if (p[0] & 0x70)
			fail(c, "frame with RSV bits 0x%02x and no extension negotiated", p[0] & 0x70);
		/* §5.1: "A client MUST close a connection if it detects a masked frame" */
		if (p[1] & 0x80)
			fail(c, "masked frame from the server");
		if (len == 126) {
			if (avail < 4)
				break;
			len = (uint64_t)p[2] << 8 | p[3];
			hdr = 4;
			if (len < 126)
				fail(c, "frame length %llu not in its minimal encoding",
				     (unsigned long long)len);
		} else if (len == 127) {
			if (avail < 10)
				break;
			len = 0;
			for (int i = 2; i < 10; i++)
				len = len << 8 | p[i];
			hdr = 10;
			if (len >> 63 || len < 65536)
				fail(c, "bad 64-bit frame length %llu", (unsigned long long)len);
		}
		if ((op > OP_BINARY && op < OP_CLOSE) || op > OP_PONG)
			fail(c, "reserved opcode 0x%x", op);
		if (op & 0x8) {
			/* §5.5: "All control frames MUST have a payload length of 125
			 * bytes or less and MUST NOT be fragmented." */
			if (!fin || len > CTRL_MAX)
				fail(c, "control frame 0x%x %s", op,
				     fin ? "longer than 125 bytes" : "fragmented");
		} else if (len > MSG_LEN - (op == OP_CONT ? c->msg_len : 0)) {
			fail(c, "echo mismatch: a %llu-byte frame for a %zu-byte message",
			     (unsigned long long)len, MSG_LEN);
		}
		if (avail - hdr < len)
			break;		/* the rest comes with a later read */
		const uint8_t *payload = p + hdr;
		switch (op) {
		case OP_TEXT:
		case OP_BINARY:
			/* §5.4: a new message cannot start inside a fragmented one */
			if (c->msg_op != 0)
				fail(c, "data frame inside a fragmented message");
			c->msg_op = op;
			c->msg_len = 0;
			/* fall through */
		case OP_CONT:
			if (c->msg_op == 0)
				fail(c, "continuation frame with no message started");
			memcpy(c->msg + c->msg_len, payload, (size_t)len);
			c->msg_len += (size_t)len;
			if (fin)
				on_echo(L, c, now);
			break;
		case OP_PING:
			/* §5.5.2: "an endpoint MUST send a Pong frame in response" */
			if (c->state == C_OPEN) {
				queue_frame(L, c, OP_PONG, payload, (size_t)len);
				flush(L, c);
			}
			break;
		case OP_PONG:
			break;
		case OP_CLOSE:
			on_close_frame(L, c, payload, (size_t)len);
			break;
		default:	/* reserved: refused above */
			break;
		}
		pos += hdr + (size_t)len;
	}
	if (c->fd >= 0 && pos > 0) {
		memmove(c->rbuf, c->rbuf + pos, c->rlen - pos);
		c->rlen -= pos;
	}
}

/* ---- events ------------------------------------------------------------------------- */

static void on_readable(struct load *L, struct conn *c)
{
	ssize_t n = recv(c->fd, c->rbuf + c->rlen, RBUF - c->rlen, MSG_DONTWAIT);

	if (n < 0) {
		if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
			return;
		conn_dead(L, c, E_READ, "recv", errno);
		return;
	}
	if (n == 0) {
		/* §7.1.1: after the closing handshake the server closes TCP first */
		if (c->state == C_CLOSED) {
			close(c->fd);
			c->fd = -1;
			c->state = C_DONE;
			L->open--;
			L->settled++;
			return;
		}
		conn_dead(L, c, E_READ, "the server closed the connection", 0);
		return;
	}
	c->rlen += (size_t)n;
	uint64_t now = now_ns();
	if (c->state == C_HANDSHAKE) {
		size_t used = parse_handshake(c);
		if (used == 0)
			return;
		memmove(c->rbuf, c->rbuf + used, c->rlen - used);
		c->rlen -= used;
		c->state = C_OPEN;
		L->open++;
	}
	parse_frames(L, c, now);
}

static void on_event(struct load *L, struct conn *c, uint32_t events)
{
	if (c->state == C_CONNECTING) {
		int err = 0;
		socklen_t len = sizeof(err);
		if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
			err = errno;
		if (err != 0) {
			conn_dead(L, c, E_CONNECT, "connect", err);
			return;
		}
		if (!(events & EPOLLOUT))
			return;
		start_handshake(L, c);
		return;
	}
	if (events & (EPOLLIN | EPOLLERR | EPOLLHUP))
		on_readable(L, c);
	if (c->fd >= 0 && (events & EPOLLOUT))
		flush(L, c);
}

static void open_conn(struct load *L, struct conn *c)
{
	const struct addrinfo *a = L->addr;
	int one = 1;

	c->fd = socket(a->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (c->fd < 0)
		fail(c, "socket: %s", strerror(errno));
	/* one small frame per round trip: never wait for Nagle (wrk does the same) */
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	c->state = C_CONNECTING;
	c->want_out = true;
	struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT, .data.ptr = c };
	if (epoll_ctl(L->epfd, EPOLL_CTL_ADD, c->fd, &ev) < 0)
		fail(c, "epoll_ctl: %s", strerror(errno));
	if (connect(c->fd, a->ai_addr, a->ai_addrlen) < 0 && errno != EINPROGRESS)
		conn_dead(L, c, E_CONNECT, "connect", errno);
}

/* ---- phases --------------------------------------------------------------------------- */

static void start_sending(struct load *L, uint64_t now)
{
	for (int i = 0; i < L->conns; i++)
		maybe_send(L, &L->conn[i], now);
}

static void start_measure(struct load *L, uint64_t now)
{
	L->phase = P_MEASURE;
	L->measure_start_ns = now;
	L->phase_end_ns = now + (uint64_t)(L->duration_s * 1e9);
	L->cpu0_s = cpu_seconds();
	start_sending(L, now);
}

/* The closing handshake, §7.1.2: a Close frame with 1000 (normal closure),
 * once the connection's echo in flight is back (the server may drop an echo
 * it has not sent when the Close arrives). */
static void maybe_close(struct load *L, struct conn *c)
{
	static const uint8_t normal[2] = { 1000 >> 8, 1000 & 0xff };

	if (L->phase != P_CLOSING || c->state != C_OPEN || c->waiting)
		return;
	queue_frame(L, c, OP_CLOSE, normal, sizeof(normal));
	c->state = C_CLOSING;
	flush(L, c);
}

static void start_closing(struct load *L, uint64_t now)
{
	L->measure_end_ns = now;
	L->cpu_s = cpu_seconds() - L->cpu0_s;
	L->phase = P_CLOSING;
	L->phase_end_ns = now + CLOSE_WAIT_NS;
	for (int i = 0; i < L->conns; i++)
		maybe_close(L, &L->conn[i]);
}

/* "WARM" on stdout, then wait for a line (or EOF) on stdin. */
static void wait_for_go(void)
{
	char ch;

	fputs("WARM\n", stdout);
	fflush(stdout);
	for (;;) {
		ssize_t n = read(STDIN_FILENO, &ch, 1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0 || ch == '\n')
			return;
	}
}

/* Connections whose message (or handshake, or closing) is overdue. */
static void scan_timeouts(struct load *L, uint64_t now)
{
	uint64_t limit = (uint64_t)(L->timeout_s * 1e9);

	for (int i = 0; i < L->conns; i++) {
		struct conn *c = &L->conn[i];
		if (c->waiting && now - c->sent_ns > limit)
			conn_dead(L, c, E_TIMEOUT, "no echo in time", 0);
	}
}

/* Moves the run along: called after every batch of events. */
static void tick(struct load *L, uint64_t now)
{
	if (now - L->last_scan_ns > NS / 10) {
		L->last_scan_ns = now;
		scan_timeouts(L, now);
	}
	int alive = L->conns - L->settled;
	switch (L->phase) {
	case P_OPENING:
		if (alive > 0 && L->open < alive && now < L->phase_end_ns)
			break;
		for (int i = 0; i < L->conns; i++) {
			struct conn *c = &L->conn[i];
			if (c->state == C_CONNECTING || c->state == C_HANDSHAKE)
				conn_dead(L, c, E_TIMEOUT, "not open in time", 0);
		}
		if (L->open == 0)
			fail(NULL, "no connection opened (%d tried)", L->conns);
		if (L->warmup_s > 0) {
			L->phase = P_WARMUP;
			L->phase_end_ns = now + (uint64_t)(L->warmup_s * 1e9);
			start_sending(L, now);
		} else if (L->sync) {
			L->phase = P_DRAIN;	/* nothing in flight: WARM at once */
		} else {
			start_measure(L, now);
		}
		break;
	case P_WARMUP:
		if (now >= L->phase_end_ns)
			L->phase = L->sync ? P_DRAIN : P_MEASURE;
		if (L->phase == P_MEASURE)
			start_measure(L, now);
		break;
	case P_DRAIN:
		if (L->inflight > 0)
			break;
		wait_for_go();
		start_measure(L, now_ns());
		break;
	case P_MEASURE:
		if (now >= L->phase_end_ns || L->open == 0 ||
		    (L->max_messages && L->messages >= L->max_messages))
			start_closing(L, now);
		break;
	case P_CLOSING:
		if (alive == 0) {
			L->phase = P_END;
		} else if (now >= L->phase_end_ns) {
			for (int i = 0; i < L->conns; i++) {
				struct conn *c = &L->conn[i];
				if (c->state != C_DONE && c->state != C_DEAD)
					conn_dead(L, c, E_TIMEOUT, "closing handshake not done in time", 0);
			}
			L->phase = P_END;
		}
		break;
	case P_END:
		break;
	}
}

static void report(const struct load *L)
{
	double secs = (double)(L->measure_end_ns - L->measure_start_ns) / 1e9;
	const struct hist *h = &L->hist;
	uint64_t errors = 0;

	for (int k = 0; k < E_KINDS; k++)
		errors += L->errors[k];
	printf("{\"connections\": %d, \"messages\": %llu, \"seconds\": %.6f, "
	       "\"msgs_per_s\": %.1f, \"message_bytes\": %zu, \"bytes\": %llu, ",
	       L->conns, (unsigned long long)L->messages, secs,
	       secs > 0 ? (double)L->messages / secs : 0.0, MSG_LEN,
	       (unsigned long long)(L->messages * MSG_LEN));
	printf("\"latency_us\": {\"p50\": %.1f, \"p90\": %.1f, \"p99\": %.1f, \"p999\": %.1f, "
	       "\"p9999\": %.1f, \"mean\": %.1f, \"max\": %.1f}, ",
	       hist_quantile_us(h, 0.50), hist_quantile_us(h, 0.90), hist_quantile_us(h, 0.99),
	       hist_quantile_us(h, 0.999), hist_quantile_us(h, 0.9999),
	       h->count ? (double)h->sum / (double)h->count / 1000.0 : 0.0,
	       (double)h->max / 1000.0);
	printf("\"errors\": {");
	for (int k = 0; k < E_KINDS; k++)
		printf("%s\"%s\": %llu", k ? ", " : "", error_names[k],
		       (unsigned long long)L->errors[k]);
	printf("}, \"error_count\": %llu, \"client_cpu_s\": %.6f, \"client_busy\": %.4f}\n",
	       (unsigned long long)errors, L->cpu_s, secs > 0 ? L->cpu_s / secs : 0.0);
	fflush(stdout);
}

/* ---- the command line ---------------------------------------------------------------- */

static _Noreturn void usage(const char *why)
{
	if (why != NULL)
		fprintf(stderr, "ws_load: %s\n", why);
	fputs("usage: ws_load [-c CONNS] [-d SECONDS] [-w SECONDS] [-n MESSAGES] [-t SECONDS]\n"
	      "               [-b] [-s] HOST PORT [PATH]\n"
	      "  -c  connections (default 1)      -d  measured seconds (default 5)\n"
	      "  -w  warm-up seconds (default 1)  -n  stop after this many echoes\n"
	      "  -t  seconds to wait for a handshake or an echo (default 10)\n"
	      "  -b  binary frames (default text) -s  after the warm-up print WARM and\n"
	      "                                       wait for a line on stdin\n", stderr);
	exit(2);
}

static double parse_seconds(const char *s, const char *what, double min)
{
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (errno != 0 || end == s || *end != '\0' || !(v >= min) || v > 86400.0) {
		fprintf(stderr, "ws_load: %s: bad number of seconds \"%s\"\n", what, s);
		exit(2);
	}
	return v;
}

static long long parse_count(const char *s, const char *what, long long min, long long max)
{
	char *end;
	errno = 0;
	long long v = strtoll(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || v < min || v > max) {
		fprintf(stderr, "ws_load: %s: \"%s\" is not a whole number in %lld..%lld\n", what,
			s, min, max);
		exit(2);
	}
	return v;
}

int main(int argc, char **argv)
{
	static struct load load;	/* the histogram is large: not on the stack */
	struct load *L = &load;
	int opt;

	L->conns = 1;
	L->warmup_s = 1.0;
	L->duration_s = 5.0;
	L->timeout_s = 10.0;
	L->opcode = OP_TEXT;
	L->pool_pos = sizeof(L->pool);
	while ((opt = getopt(argc, argv, "c:d:w:n:t:bsh")) != -1) {
		switch (opt) {
		case 'c': L->conns = (int)parse_count(optarg, "-c", 1, MAX_CONNS); break;
		case 'd': L->duration_s = parse_seconds(optarg, "-d", 0.001); break;
		case 'w': L->warmup_s = parse_seconds(optarg, "-w", 0.0); break;
		case 'n': L->max_messages = (uint64_t)parse_count(optarg, "-n", 1, 1LL << 62); break;
		case 't': L->timeout_s = parse_seconds(optarg, "-t", 0.001); break;
		case 'b': L->opcode = OP_BINARY; break;
		case 's': L->sync = true; break;
		case 'h': usage(NULL);
		default: usage("unknown option");
		}
	}
	if (argc - optind < 2 || argc - optind > 3)
		usage("HOST and PORT are needed");
	L->host = argv[optind];
	L->port = argv[optind + 1];
	L->path = argc - optind == 3 ? argv[optind + 2] : "/";
	if (L->path[0] != '/' || strpbrk(L->path, " \r\n") != NULL || strlen(L->path) > 512)
		usage("PATH must start with / and hold no space or line break (at most 512 bytes)");
	if (strlen(L->host) > 255 || strpbrk(L->host, " \r\n/") != NULL)
		usage("bad HOST");

	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
				  .ai_flags = AI_NUMERICSERV };
	int rc = getaddrinfo(L->host, L->port, &hints, &L->addr);
	if (rc != 0) {
		fprintf(stderr, "ws_load: %s port %s: %s\n", L->host, L->port, gai_strerror(rc));
		return 2;
	}
	L->conn = calloc((size_t)L->conns, sizeof(*L->conn));
	if (L->conn == NULL)
		fail(NULL, "out of memory for %d connections", L->conns);
	L->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (L->epfd < 0)
		fail(NULL, "epoll_create1: %s", strerror(errno));

	uint64_t now = now_ns();
	L->phase = P_OPENING;
	L->phase_end_ns = now + (uint64_t)(L->timeout_s * 1e9);
	L->last_scan_ns = now;
	for (int i = 0; i < L->conns; i++) {
		L->conn[i].id = i;
		L->conn[i].fd = -1;
		open_conn(L, &L->conn[i]);
	}

	struct epoll_event ev[256];
	while (L->phase != P_END) {
		int n = epoll_wait(L->epfd, ev, 256, 10);
		if (n < 0 && errno != EINTR)
			fail(NULL, "epoll_wait: %s", strerror(errno));
		for (int i = 0; i < n; i++) {
			struct conn *c = ev[i].data.ptr;
			if (c->fd >= 0)
				on_event(L, c, ev[i].events);
		}
		tick(L, now_ns());
	}
	report(L);
	uint64_t errors = 0;
	for (int k = 0; k < E_KINDS; k++)
		errors += L->errors[k];
	freeaddrinfo(L->addr);
	free(L->conn);
	close(L->epfd);
	return errors ? 1 : 0;
}
