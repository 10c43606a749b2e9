/*
 * ceiling: how many finished TCP/IPv4 frames per second this machine's
 * transports can push from the server namespace to the client over the lab
 * veth, and at what CPU cost per frame -- the ceiling under specloop's TX.
 *
 * Built by benchmarks/ceiling.py at run time (gcc -O2 ... -lxdp -lbpf) and
 * run inside the server namespace, pinned to the server's CPU:
 *
 *   ceiling xdp    IF SRC_MAC DST_MAC SRC_IP DST_IP DPORT SECONDS BATCH
 *       AF_XDP copy mode TX (libxdp's xsk API, XDP_COPY): a TX ring of
 *       finished 1514-byte frames, BATCH descriptors queued per sendto()
 *       kick, kicked until the ring is drained (the kernel sends a bounded
 *       batch per call), completions reaped -- what native/xsk.c does.
 *   ceiling packet IF ... SECONDS BATCH
 *       AF_PACKET SOCK_RAW bound to IF: one 1514-byte frame per message,
 *       BATCH messages per sendmmsg() (BATCH 1: one sendto() per frame).
 *   ceiling gso    IF ... SECONDS BATCH
 *       AF_PACKET with PACKET_VNET_HDR: each message a virtio_net_hdr
 *       (NEEDS_CSUM, GSO_TCPV4, gso_size 1448) + one super-frame of 45
 *       segments (65,160 payload bytes) that crosses veth whole.
 *   ceiling tcp    DST_IP DPORT SECONDS BUFSIZE
 *       the kernel's own TCP: connect to a tcp-sink, send() BUFSIZE-byte
 *       buffers for SECONDS.
 *   ceiling tcp-sendfile DST_IP DPORT SECONDS FILE
 *       the same with sendfile() of FILE, over and over (nginx's way).
 *   ceiling tcp-sink DPORT
 *       (in the client namespace) accept one connection, read to EOF.
 *
 * Frames carry the segment layout of specloop's: Ethernet + IPv4 (20) +
 * TCP with the timestamp option (32), 1448 payload bytes, checksums
 * complete (the GSO super-frame: pseudo-header sum, the kernel finishes
 * each segment).  They go to DPORT on the client, where the suite's nft
 * rule drops them in the input hook and counts them.
 *
 * Prints one line: CEILING {json} with frames (skbs) and segments sent,
 * payload bytes, seconds, and this process's user/system CPU seconds.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <linux/virtio_net.h>
#include <net/if.h>
#include <netinet/in.h>
#include <linux/tcp.h> /* struct tcp_info with tcpi_data_segs_out */
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <fcntl.h>
#include <time.h>
#include <unistd.h>
#include <xdp/xsk.h>

#define PAYLOAD 1448
#define HDRS (14 + 20 + 32)
#define FRAME (HDRS + PAYLOAD) /* 1514 */
#define GSO_SEGS 45
#define SUPER (HDRS + GSO_SEGS * PAYLOAD)
#define MAX_BATCH 1024

#ifndef SOL_XDP
#define SOL_XDP 283
#endif

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(const char *what)
{
	fprintf(stderr, "ceiling: %s: %s\n", what, strerror(errno));
	exit(1);
}

static int parse_mac(const char *s, uint8_t mac[6])
{
	unsigned int b[6];

	if (sscanf(s, "%x:%x:%x:%x:%x:%x", &b[0], &b[1], &b[2], &b[3], &b[4], &b[5]) != 6)
		return -1;
	for (int i = 0; i < 6; i++)
		mac[i] = (uint8_t)b[i];
	return 0;
}

static uint32_t sum16(const void *p, size_t len, uint32_t acc)
{
	const uint8_t *b = p;

	while (len > 1) {
		acc += (uint32_t)b[0] << 8 | b[1];
		b += 2;
		len -= 2;
	}
	if (len)
		acc += (uint32_t)b[0] << 8;
	return acc;
}

static uint16_t fold(uint32_t acc)
{
	while (acc >> 16)
		acc = (acc & 0xffff) + (acc >> 16);
	return (uint16_t)acc;
}

struct flow {
	uint8_t src_mac[6], dst_mac[6];
	struct in_addr src, dst;
	uint16_t dport;
};

/*
 * One Ethernet/IPv4/TCP frame of `payload` bytes at `f`: complete
 * checksums, or (partial) the TCP field holding the folded pseudo-header
 * sum for the device or the kernel's GSO to finish.
 */
static size_t build(uint8_t *f, const struct flow *fl, size_t payload, uint32_t seq,
		    int partial)
{
	uint8_t *ip = f + 14, *tcp = ip + 20;
	size_t tcp_len = 32 + payload, ip_len = 20 + tcp_len;
	uint32_t acc;

	memcpy(f, fl->dst_mac, 6);
	memcpy(f + 6, fl->src_mac, 6);
	f[12] = 0x08;
	f[13] = 0x00;
	memset(ip, 0, 20);
	ip[0] = 0x45;
	ip[2] = (uint8_t)(ip_len >> 8);
	ip[3] = (uint8_t)ip_len;
	ip[6] = 0x40; /* DF */
	ip[8] = 64;
	ip[9] = IPPROTO_TCP;
	memcpy(ip + 12, &fl->src, 4);
	memcpy(ip + 16, &fl->dst, 4);
	acc = fold(sum16(ip, 20, 0));
	ip[10] = (uint8_t)(~acc >> 8);
	ip[11] = (uint8_t)~acc;

	memset(tcp, 0, 32);
	tcp[0] = 0x9c; /* sport 40000 */
	tcp[1] = 0x40;
	tcp[2] = (uint8_t)(fl->dport >> 8);
	tcp[3] = (uint8_t)fl->dport;
	tcp[4] = (uint8_t)(seq >> 24);
	tcp[5] = (uint8_t)(seq >> 16);
	tcp[6] = (uint8_t)(seq >> 8);
	tcp[7] = (uint8_t)seq;
	tcp[11] = 1; /* ack 1 */
	tcp[12] = 8 << 4; /* 32-byte header */
	tcp[13] = 0x18; /* PSH ACK */
	tcp[14] = 0xff;
	tcp[15] = 0xff;
	tcp[20] = 1; /* NOP NOP TS(10) */
	tcp[21] = 1;
	tcp[22] = 8;
	tcp[23] = 10;
	tcp[27] = 1; /* TSval 1, TSecr 0 */
	for (size_t i = 0; i < payload; i++)
		tcp[32 + i] = (uint8_t)(i * 7 + 1);

	/* pseudo-header: addresses, protocol, TCP length */
	acc = sum16(ip + 12, 8, 0) + IPPROTO_TCP + (uint32_t)tcp_len;
	if (partial) {
		uint16_t ph = fold(acc);

		tcp[16] = (uint8_t)(ph >> 8);
		tcp[17] = (uint8_t)ph;
	} else {
		uint16_t c = (uint16_t)~fold(sum16(tcp, tcp_len, acc));

		tcp[16] = (uint8_t)(c >> 8);
		tcp[17] = (uint8_t)c;
	}
	return 14 + ip_len;
}

struct result {
	uint64_t frames, segments, payload_bytes, calls, errors;
	double seconds;
};

static void report(const char *mode, int batch, const struct result *r)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	printf("CEILING {\"mode\": \"%s\", \"batch\": %d, \"frames\": %llu, \"segments\": %llu, "
	       "\"payload_bytes\": %llu, \"calls\": %llu, \"errors\": %llu, \"seconds\": %.6f, "
	       "\"user_s\": %.6f, \"system_s\": %.6f}\n",
	       mode, batch, (unsigned long long)r->frames, (unsigned long long)r->segments,
	       (unsigned long long)r->payload_bytes, (unsigned long long)r->calls,
	       (unsigned long long)r->errors, r->seconds,
	       ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6,
	       ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6);
	fflush(stdout);
}

/* ---- AF_XDP copy-mode TX ------------------------------------------------------ */

#define XDP_FRAMES 4096
#define XDP_FRAME_SIZE 4096
#define XDP_RING 2048

static int run_xdp(const char *ifname, const struct flow *fl, double seconds, int batch,
		   struct result *r)
{
	struct xsk_ring_prod fill, tx;
	struct xsk_ring_cons comp;
	struct xsk_umem *umem;
	struct xsk_socket *xsk;
	struct xsk_umem_config ucfg = {
		.fill_size = XDP_RING, .comp_size = XDP_RING,
		.frame_size = XDP_FRAME_SIZE, .frame_headroom = 0,
	};
	struct xsk_socket_config scfg = {
		.rx_size = 0, .tx_size = XDP_RING,
		.libxdp_flags = XSK_LIBXDP_FLAGS__INHIBIT_PROG_LOAD,
		.bind_flags = XDP_COPY,
	};
	uint64_t free_stack[XDP_FRAMES];
	uint32_t free_top = 0, outstanding = 0;
	size_t area_len = (size_t)XDP_FRAMES * XDP_FRAME_SIZE;
	uint8_t *area;
	double t0, deadline;
	int rc, fd;

	area = mmap(NULL, area_len, PROT_READ | PROT_WRITE,
		    MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	if (area == MAP_FAILED)
		die("mmap");
	rc = xsk_umem__create(&umem, area, area_len, &fill, &comp, &ucfg);
	if (rc) {
		errno = -rc;
		die("xsk_umem__create");
	}
	rc = xsk_socket__create(&xsk, ifname, 0, umem, NULL, &tx, &scfg);
	if (rc) {
		errno = -rc;
		die("xsk_socket__create (AF_XDP copy mode, queue 0)");
	}
	fd = xsk_socket__fd(xsk);
	/* every frame finished once: only the descriptors move afterwards */
	for (uint32_t i = 0; i < XDP_FRAMES; i++) {
		build(area + (size_t)i * XDP_FRAME_SIZE, fl, PAYLOAD, i * PAYLOAD, 0);
		free_stack[free_top++] = (uint64_t)i * XDP_FRAME_SIZE;
	}
	t0 = now();
	deadline = t0 + seconds;
	while (now() < deadline) {
		uint32_t idx, n, want = (uint32_t)batch;

		if (want > free_top)
			want = free_top;
		n = want ? xsk_ring_prod__reserve(&tx, want, &idx) : 0;
		for (uint32_t i = 0; i < n; i++) {
			struct xdp_desc *d = xsk_ring_prod__tx_desc(&tx, idx + i);

			d->addr = free_stack[--free_top];
			d->len = FRAME;
			d->options = 0;
		}
		if (n) {
			xsk_ring_prod__submit(&tx, n);
			outstanding += n;
		}
		/* kick until the kernel has taken the whole batch */
		for (int tries = 0; tries < 1024; tries++) {
			r->calls++;
			if (sendto(fd, NULL, 0, MSG_DONTWAIT, NULL, 0) < 0 && errno != EAGAIN &&
			    errno != EBUSY && errno != ENOBUFS) {
				r->errors++;
				break;
			}
			if (__atomic_load_n(tx.consumer, __ATOMIC_ACQUIRE) == *tx.producer)
				break;
		}
		n = xsk_ring_cons__peek(&comp, XDP_RING, &idx);
		for (uint32_t i = 0; i < n; i++)
			free_stack[free_top++] = *xsk_ring_cons__comp_addr(&comp, idx + i) &
						 ~(uint64_t)(XDP_FRAME_SIZE - 1);
		if (n) {
			xsk_ring_cons__release(&comp, n);
			outstanding -= n;
			r->frames += n;
		}
	}
	r->seconds = now() - t0;
	r->segments = r->frames;
	r->payload_bytes = r->frames * PAYLOAD;
	(void)outstanding;
	xsk_socket__delete(xsk);
	xsk_umem__delete(umem);
	munmap(area, area_len);
	return 0;
}

/* ---- AF_PACKET: per-MSS frames, or GSO super-frames with a vnet header -------- */

static int packet_socket(const char *ifname, int vnet)
{
	struct sockaddr_ll sll = {0};
	int fd = socket(AF_PACKET, SOCK_RAW, 0); /* protocol 0: send only */
	int one = 1;

	if (fd < 0)
		die("socket(AF_PACKET)");
	if (vnet && setsockopt(fd, SOL_PACKET, PACKET_VNET_HDR, &one, sizeof(one)) < 0)
		die("PACKET_VNET_HDR");
	sll.sll_family = AF_PACKET;
	sll.sll_ifindex = (int)if_nametoindex(ifname);
	if (!sll.sll_ifindex)
		die(ifname);
	if (bind(fd, (struct sockaddr *)&sll, sizeof(sll)) < 0)
		die("bind(AF_PACKET)");
	return fd;
}

static int run_packet(const char *ifname, const struct flow *fl, double seconds, int batch,
		      int gso, struct result *r)
{
	static struct mmsghdr msgs[MAX_BATCH];
	static struct iovec iov[MAX_BATCH][2];
	struct virtio_net_hdr vh = {0};
	size_t len = gso ? SUPER : FRAME;
	uint8_t *frames = malloc((size_t)batch * len);
	int fd = packet_socket(ifname, gso);
	double t0, deadline;

	if (!frames)
		die("malloc");
	if (gso) {
		vh.flags = VIRTIO_NET_HDR_F_NEEDS_CSUM;
		vh.gso_type = VIRTIO_NET_HDR_GSO_TCPV4;
		vh.hdr_len = HDRS;
		vh.gso_size = PAYLOAD;
		vh.csum_start = 14 + 20;
		vh.csum_offset = 16;
	}
	for (int i = 0; i < batch; i++) {
		uint8_t *f = frames + (size_t)i * len;
		int n = 0;

		build(f, fl, gso ? GSO_SEGS * PAYLOAD : PAYLOAD,
		      (uint32_t)i * (gso ? GSO_SEGS : 1) * PAYLOAD, gso);
		if (gso) {
			iov[i][n].iov_base = &vh;
			iov[i][n++].iov_len = sizeof(vh);
		}
		iov[i][n].iov_base = f;
		iov[i][n++].iov_len = len;
		memset(&msgs[i], 0, sizeof(msgs[i]));
		msgs[i].msg_hdr.msg_iov = iov[i];
		msgs[i].msg_hdr.msg_iovlen = (size_t)n;
	}
	t0 = now();
	deadline = t0 + seconds;
	while (now() < deadline) {
		int sent;

		r->calls++;
		if (batch == 1)
			sent = sendmsg(fd, &msgs[0].msg_hdr, 0) < 0 ? -1 : 1;
		else
			sent = sendmmsg(fd, msgs, (unsigned int)batch, 0);
		if (sent < 0) {
			if (errno != ENOBUFS && errno != EAGAIN)
				die("send(AF_PACKET)");
			r->errors++;
			continue;
		}
		r->frames += (uint64_t)sent;
	}
	r->seconds = now() - t0;
	r->segments = r->frames * (gso ? GSO_SEGS : 1);
	r->payload_bytes = r->segments * PAYLOAD;
	close(fd);
	free(frames);
	return 0;
}

/* ---- the kernel's own TCP --------------------------------------------------------- */

static int run_tcp(const char *dst, int port, double seconds, size_t bufsize,
		   const char *file, struct result *r)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	char *buf = malloc(bufsize);
	struct tcp_info ti;
	socklen_t tl = sizeof(ti);
	double t0, deadline;
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	if (!buf || fd < 0)
		die("socket(TCP)");
	memset(buf, 'x', bufsize);
	inet_pton(AF_INET, dst, &sa.sin_addr);
	for (int tries = 0; connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0; tries++) {
		if (tries > 100)
			die("connect");
		usleep(20000);
		close(fd);
		fd = socket(AF_INET, SOCK_STREAM, 0);
	}
	memset(&ti, 0, sizeof(ti));
	int ffd = -1;
	off_t fsize = 0, off = 0;

	if (file) {
		ffd = open(file, O_RDONLY);
		if (ffd < 0)
			die(file);
		fsize = lseek(ffd, 0, SEEK_END);
		if (fsize <= 0)
			die("empty file");
	}
	t0 = now();
	deadline = t0 + seconds;
	while (now() < deadline) {
		ssize_t n;

		if (ffd >= 0) {
			if (off >= fsize)
				off = 0;
			n = sendfile(fd, ffd, &off, (size_t)(fsize - off));
		} else {
			n = send(fd, buf, bufsize, 0);
		}
		r->calls++;
		if (n < 0)
			die("send(TCP)");
		r->payload_bytes += (uint64_t)n;
	}
	if (ffd >= 0)
		close(ffd);
	r->seconds = now() - t0;
	if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &tl) == 0)
		r->segments = ti.tcpi_data_segs_out;
	else
		r->segments = r->payload_bytes / PAYLOAD;
	r->frames = 0; /* the kernel's skbs are not counted here */
	shutdown(fd, SHUT_WR);
	close(fd);
	free(buf);
	return 0;
}

static int run_sink(int port)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
				 .sin_addr.s_addr = htonl(INADDR_ANY)};
	static char buf[1 << 18];
	unsigned long long total = 0;
	int one = 1, lfd = socket(AF_INET, SOCK_STREAM, 0), fd;

	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(lfd, 1) < 0)
		die("bind/listen");
	printf("LISTENING\n");
	fflush(stdout);
	fd = accept(lfd, NULL, NULL);
	if (fd < 0)
		die("accept");
	for (;;) {
		ssize_t n = recv(fd, buf, sizeof(buf), 0);

		if (n <= 0)
			break;
		total += (unsigned long long)n;
	}
	printf("SINK {\"bytes\": %llu}\n", total);
	return 0;
}

int main(int argc, char **argv)
{
	struct result r = {0};
	struct flow fl;

	if (argc >= 3 && !strcmp(argv[1], "tcp-sink"))
		return run_sink(atoi(argv[2]));
	if (argc >= 6 && !strcmp(argv[1], "tcp")) {
		run_tcp(argv[2], atoi(argv[3]), atof(argv[4]), (size_t)atol(argv[5]), NULL, &r);
		report("tcp", 0, &r);
		return 0;
	}
	if (argc >= 6 && !strcmp(argv[1], "tcp-sendfile")) {
		run_tcp(argv[2], atoi(argv[3]), atof(argv[4]), 1, argv[5], &r);
		report("tcp-sendfile", 0, &r);
		return 0;
	}
	if (argc < 10) {
		fprintf(stderr, "usage: ceiling {xdp|packet|gso} IF SRC_MAC DST_MAC SRC_IP DST_IP "
				"DPORT SECONDS BATCH | tcp DST_IP DPORT SECONDS BUFSIZE | "
				"tcp-sendfile DST_IP DPORT SECONDS FILE | tcp-sink DPORT\n");
		return 2;
	}
	memset(&fl, 0, sizeof(fl));
	if (parse_mac(argv[3], fl.src_mac) || parse_mac(argv[4], fl.dst_mac) ||
	    inet_pton(AF_INET, argv[5], &fl.src) != 1 || inet_pton(AF_INET, argv[6], &fl.dst) != 1) {
		fprintf(stderr, "ceiling: bad MAC or address\n");
		return 2;
	}
	fl.dport = (uint16_t)atoi(argv[7]);
	double seconds = atof(argv[8]);
	int batch = atoi(argv[9]);

	if (batch < 1 || batch > MAX_BATCH) {
		fprintf(stderr, "ceiling: BATCH must be 1..%d\n", MAX_BATCH);
		return 2;
	}
	if (!strcmp(argv[1], "xdp"))
		run_xdp(argv[2], &fl, seconds, batch, &r);
	else if (!strcmp(argv[1], "packet"))
		run_packet(argv[2], &fl, seconds, batch, 0, &r);
	else if (!strcmp(argv[1], "gso"))
		run_packet(argv[2], &fl, seconds, batch, 1, &r);
	else {
		fprintf(stderr, "ceiling: unknown mode %s\n", argv[1]);
		return 2;
	}
	report(argv[1], batch, &r);
	return 0;
}
