/* SPDX-License-Identifier: MIT */
/*
 * nfq_delay.c - a constant delay for the packets that an NFQUEUE rule
 * hands to user space (netfilter's nfnetlink_queue, spoken directly over
 * netlink: no libnetfilter_queue).  Test code: benchmarks/impair.py runs it
 * in the lab's client namespace behind an iptables NFQUEUE rule, because
 * this kernel has neither netem nor the fq qdisc (FACTS.md), so neither
 * `tc qdisc netem delay` nor an earliest-departure-time stamp can delay.
 *
 *   nfq_delay QUEUE DELAY_US [MAXLEN]
 *
 * Each packet queued to QUEUE is accepted DELAY_US microseconds after it
 * was read.  The delay is the same for every packet, so verdicts leave in
 * the order the packets came, and one NFQNL_MSG_VERDICT_BATCH accepts
 * every packet up to an id (include/uapi/linux/netfilter/nfnetlink_queue.h;
 * net/netfilter/nfnetlink_queue.c, nfqnl_recv_verdict_batch).  Only the
 * metadata is copied to us (NFQNL_COPY_META), never the payload.
 *
 * Prints "ready" once the queue is bound; on SIGTERM or SIGINT accepts
 * everything still held, prints one line of counts
 * ("packets N max_held N overruns N") and exits 0.  A netlink receive
 * overrun (ENOBUFS: the kernel dropped packets it could not queue to us)
 * is counted, not fatal: the caller reads it as extra loss.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nfnetlink_queue.h>
#include <linux/netlink.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* one held packet: its queue id and when it may go */
struct held {
	uint32_t id;
	uint64_t due_ns;
};

/* the packets held, oldest first: a ring that grows by doubling */
struct fifo {
	struct held *slot;
	size_t cap, head, len;
};

struct delayer {
	int fd;			/* netlink socket */
	uint16_t queue;
	uint64_t delay_ns;
	uint32_t seq;
	struct fifo fifo;
	uint64_t packets, overruns;
	size_t max_held;
};

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int fifo_push(struct fifo *f, uint32_t id, uint64_t due_ns)
{
	if (f->len == f->cap) {
		size_t cap = f->cap ? f->cap * 2 : 4096;
		struct held *slot = calloc(cap, sizeof(*slot));

		if (!slot)
			return -ENOMEM;
		for (size_t i = 0; i < f->len; i++)
			slot[i] = f->slot[(f->head + i) % f->cap];
		free(f->slot);
		f->slot = slot;
		f->cap = cap;
		f->head = 0;
	}
	f->slot[(f->head + f->len) % f->cap] = (struct held){ id, due_ns };
	f->len++;
	return 0;
}

static const struct held *fifo_peek(const struct fifo *f)
{
	return f->len ? &f->slot[f->head] : NULL;
}

static void fifo_pop(struct fifo *f)
{
	f->head = (f->head + 1) % f->cap;
	f->len--;
}

/* appends attribute (type, data, len) at buf + *off; returns -ENOSPC if
 * it does not fit in cap */
static int put_attr(char *buf, size_t cap, size_t *off, uint16_t type,
		    const void *data, uint16_t len)
{
	struct nlattr *a = (struct nlattr *)(buf + *off);
	size_t need = NLA_ALIGN(NLA_HDRLEN + len);

	if (*off + need > cap)
		return -ENOSPC;
	memset(a, 0, need);
	a->nla_type = type;
	a->nla_len = NLA_HDRLEN + len;
	memcpy((char *)a + NLA_HDRLEN, data, len);
	*off += need;
	return 0;
}

/* starts a nfnetlink queue message of type msg at buf; returns its length
 * so far */
static size_t start_msg(struct delayer *d, char *buf, uint16_t msg, uint16_t flags)
{
	struct nlmsghdr *nlh = (struct nlmsghdr *)buf;
	struct nfgenmsg *nfg = (struct nfgenmsg *)NLMSG_DATA(nlh);

	memset(buf, 0, NLMSG_SPACE(sizeof(*nfg)));
	nlh->nlmsg_type = (NFNL_SUBSYS_QUEUE << 8) | msg;
	nlh->nlmsg_flags = NLM_F_REQUEST | flags;
	nlh->nlmsg_seq = ++d->seq;
	nfg->nfgen_family = AF_UNSPEC;
	nfg->version = NFNETLINK_V0;
	nfg->res_id = htons(d->queue);
	return NLMSG_SPACE(sizeof(*nfg));
}

static int send_msg(struct delayer *d, char *buf, size_t len)
{
	struct sockaddr_nl to = { .nl_family = AF_NETLINK };

	((struct nlmsghdr *)buf)->nlmsg_len = (uint32_t)len;
	if (sendto(d->fd, buf, len, 0, (struct sockaddr *)&to, sizeof(to)) < 0)
		return -errno;
	return 0;
}

/* waits for the kernel's answer to a request sent with NLM_F_ACK:
 * 0 or -errno from its NLMSG_ERROR */
static int read_ack(struct delayer *d)
{
	char buf[8192];

	for (;;) {
		ssize_t n = recv(d->fd, buf, sizeof(buf), 0);

		if (n < 0)
			return -errno;
		for (struct nlmsghdr *h = (struct nlmsghdr *)buf; NLMSG_OK(h, (size_t)n);
		     h = NLMSG_NEXT(h, n)) {
			if (h->nlmsg_type == NLMSG_ERROR && h->nlmsg_seq == d->seq) {
				const struct nlmsgerr *e = NLMSG_DATA(h);

				if (h->nlmsg_len < NLMSG_LENGTH(sizeof(*e)))
					return -EBADMSG;
				return e->error;
			}
		}
	}
}

static int config(struct delayer *d, const void *attrs, size_t attrs_len)
{
	char buf[256];
	size_t len = start_msg(d, buf, NFQNL_MSG_CONFIG, NLM_F_ACK);
	int rc;

	if (len + attrs_len > sizeof(buf))
		return -ENOSPC;
	memcpy(buf + len, attrs, attrs_len);
	rc = send_msg(d, buf, len + attrs_len);
	return rc ? rc : read_ack(d);
}

/* binds the queue, asks for metadata only, sets its length limit */
static int bind_queue(struct delayer *d, uint32_t maxlen)
{
	struct nfqnl_msg_config_cmd cmd = { .command = NFQNL_CFG_CMD_BIND, .pf = htons(AF_INET) };
	struct nfqnl_msg_config_params params = { .copy_range = 0, .copy_mode = NFQNL_COPY_META };
	uint32_t be_maxlen = htonl(maxlen);
	char attrs[128];
	size_t off = 0;
	int rc;

	rc = put_attr(attrs, sizeof(attrs), &off, NFQA_CFG_CMD, &cmd, sizeof(cmd));
	if (rc)
		return rc;
	rc = config(d, attrs, off);
	if (rc)
		return rc;
	off = 0;
	if ((rc = put_attr(attrs, sizeof(attrs), &off, NFQA_CFG_PARAMS, &params, sizeof(params))) ||
	    (rc = put_attr(attrs, sizeof(attrs), &off, NFQA_CFG_QUEUE_MAXLEN, &be_maxlen,
			   sizeof(be_maxlen))))
		return rc;
	return config(d, attrs, off);
}

/* accepts every held packet up to and including id */
static int accept_upto(struct delayer *d, uint32_t id)
{
	struct nfqnl_msg_verdict_hdr v = { .verdict = htonl(NF_ACCEPT), .id = htonl(id) };
	char buf[128];
	size_t len = start_msg(d, buf, NFQNL_MSG_VERDICT_BATCH, 0);
	int rc = put_attr(buf, sizeof(buf), &len, NFQA_VERDICT_HDR, &v, sizeof(v));

	return rc ? rc : send_msg(d, buf, len);
}

/* accepts the held packets whose time has come (all of them if all) */
static int release(struct delayer *d, int all)
{
	uint64_t now = now_ns();
	const struct held *h;
	uint32_t last = 0;
	int any = 0;

	while ((h = fifo_peek(&d->fifo)) && (all || h->due_ns <= now)) {
		last = h->id;
		any = 1;
		fifo_pop(&d->fifo);
	}
	return any ? accept_upto(d, last) : 0;
}

/* the packet id of one NFQNL_MSG_PACKET message, or -1 if it has none */
static int64_t packet_id(const struct nlmsghdr *h)
{
	size_t off = NLMSG_SPACE(sizeof(struct nfgenmsg));

	if (h->nlmsg_len < off)
		return -1;
	while (off + NLA_HDRLEN <= h->nlmsg_len) {
		const struct nlattr *a = (const struct nlattr *)((const char *)h + off);

		if (a->nla_len < NLA_HDRLEN || off + a->nla_len > h->nlmsg_len)
			return -1;
		if ((a->nla_type & NLA_TYPE_MASK) == NFQA_PACKET_HDR &&
		    a->nla_len >= NLA_HDRLEN + sizeof(struct nfqnl_msg_packet_hdr)) {
			struct nfqnl_msg_packet_hdr ph;

			memcpy(&ph, (const char *)a + NLA_HDRLEN, sizeof(ph));
			return ntohl(ph.packet_id);
		}
		off += NLA_ALIGN(a->nla_len);
	}
	return -1;
}

/* reads every message waiting; each packet is held for the delay */
static int receive(struct delayer *d)
{
	char buf[65536];

	for (;;) {
		ssize_t n = recv(d->fd, buf, sizeof(buf), MSG_DONTWAIT);
		uint64_t due;

		if (n < 0) {
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return 0;
			if (errno == ENOBUFS) {
				d->overruns++;
				continue;
			}
			if (errno == EINTR)
				continue;
			return -errno;
		}
		due = now_ns() + d->delay_ns;
		for (struct nlmsghdr *h = (struct nlmsghdr *)buf; NLMSG_OK(h, (size_t)n);
		     h = NLMSG_NEXT(h, n)) {
			int64_t id;
			int rc;

			if (h->nlmsg_type != ((NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET))
				continue;
			id = packet_id(h);
			if (id < 0)
				continue;
			rc = fifo_push(&d->fifo, (uint32_t)id, due);
			if (rc)
				return rc;
			d->packets++;
			if (d->fifo.len > d->max_held)
				d->max_held = d->fifo.len;
		}
	}
}

static int run(struct delayer *d, int sigfd)
{
	struct pollfd pfd[2] = { { .fd = d->fd, .events = POLLIN }, { .fd = sigfd, .events = POLLIN } };

	for (;;) {
		const struct held *h;
		struct timespec ts, *tsp = NULL;
		int rc = release(d, 0);

		if (rc)
			return rc;
		h = fifo_peek(&d->fifo);
		if (h) {
			uint64_t now = now_ns(), wait = h->due_ns > now ? h->due_ns - now : 0;

			ts.tv_sec = (time_t)(wait / 1000000000u);
			ts.tv_nsec = (long)(wait % 1000000000u);
			tsp = &ts;
		}
		if (ppoll(pfd, 2, tsp, NULL) < 0 && errno != EINTR)
			return -errno;
		if (pfd[1].revents & POLLIN)
			return release(d, 1);
		if (pfd[0].revents & (POLLIN | POLLERR)) {
			rc = receive(d);
			if (rc)
				return rc;
		}
	}
}

static int parse_u32(const char *s, uint32_t max, uint32_t *out)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || end == s || *end || v > max)
		return -EINVAL;
	*out = (uint32_t)v;
	return 0;
}

int main(int argc, char **argv)
{
	struct delayer d = { .fd = -1 };
	struct sockaddr_nl me = { .nl_family = AF_NETLINK };
	uint32_t queue, delay_us, maxlen = 65536;
	int rcvbuf = 16 << 20, sigfd, rc;
	sigset_t sigs;

	if (argc < 3 || argc > 4 || parse_u32(argv[1], 65535, &queue) ||
	    parse_u32(argv[2], 10000000, &delay_us) ||
	    (argc == 4 && parse_u32(argv[3], 1u << 24, &maxlen))) {
		fprintf(stderr, "usage: nfq_delay QUEUE(0-65535) DELAY_US(0-10000000) [MAXLEN]\n");
		return 2;
	}
	d.queue = (uint16_t)queue;
	d.delay_ns = (uint64_t)delay_us * 1000u;

	sigemptyset(&sigs);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	if (sigprocmask(SIG_BLOCK, &sigs, NULL) || (sigfd = signalfd(-1, &sigs, SFD_CLOEXEC)) < 0) {
		perror("nfq_delay: signalfd");
		return 1;
	}
	d.fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_NETFILTER);
	if (d.fd < 0 || bind(d.fd, (struct sockaddr *)&me, sizeof(me))) {
		perror("nfq_delay: netlink socket");
		return 1;
	}
	/* room for the messages of every packet in flight at once (root may
	 * exceed rmem_max) */
	if (setsockopt(d.fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof(rcvbuf)))
		setsockopt(d.fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
	rc = bind_queue(&d, maxlen);
	if (rc) {
		fprintf(stderr, "nfq_delay: binding queue %u: %s\n", queue, strerror(-rc));
		return 1;
	}
	printf("ready\n");
	fflush(stdout);
	rc = run(&d, sigfd);
	if (rc) {
		fprintf(stderr, "nfq_delay: %s\n", strerror(-rc));
		return 1;
	}
	printf("packets %llu max_held %zu overruns %llu\n", (unsigned long long)d.packets,
	       d.max_held, (unsigned long long)d.overruns);
	free(d.fifo.slot);
	close(d.fd);
	close(sigfd);
	return 0;
}
