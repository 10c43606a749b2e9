/* SPDX-License-Identifier: MIT */
/*
 * tx_gso.c - GSO super-frames: a run of one connection's segments handed
 * to the kernel as ONE TCP packet of up to 64 KiB, which the kernel's GSO
 * or a TSO NIC cuts into MSS-sized segments.  Copy-mode AF_XDP makes an
 * skb of every frame, and on veth the receiver's TCP work per skb runs on
 * the sender's CPU; a super-frame crosses veth whole, as the kernel's own
 * TCP sends (FACTS.md).
 *
 * The way in is a packet socket (packet(7)) bound to the engine's
 * interface with PACKET_VNET_HDR: every send starts with a struct
 * virtio_net_hdr (include/uapi/linux/virtio_net.h; virtio 1.2 §5.1.6.2,
 * "Packet Transmission"), in the host's byte order for a packet socket,
 * that asks for segmentation (GSO_TCPV4, gso_size = the MSS) and a partial
 * checksum (NEEDS_CSUM: the TCP checksum field holds the folded pseudo-
 * header sum; the segmenter completes it per segment).  Protocol 0: the
 * socket receives nothing.  PACKET_QDISC_BYPASS sends straight to the
 * driver, as the AF_XDP frames go, where the interface segments TCP
 * itself (TSO).  dev_direct_xmit, the bypass's way, drops a packet it
 * would have to segment; so without TSO tx_gso auto sends frames, and
 * tx_gso on sends super-frames the qdisc way, whose validate_xmit_skb cuts
 * them in software (counter tx_gso_software).
 *
 * We copy no payload: sendmsg() gets an iovec of the headers built by
 * tcp_out.c and the payload where it already is (UMEM frames of the send
 * queue, the static store, a mapping of a sendfile's file; or the file's
 * pages spliced through a pipe); the kernel copies it once into its skb, before
 * sendmsg() returns, so nothing stays referenced afterwards.
 *
 * tcp_out.c decides what goes as a run and keeps the segments' state; this
 * file only sends.  Test engines have no socket: with tx_gso "on" their
 * super-frames go to the TX capture whole (virtio header first).
 */
#define _GNU_SOURCE	/* splice, pipe2, F_GETPIPE_SZ */
#include <fcntl.h>
#include <linux/ethtool.h>
#include <linux/if_packet.h>
#include <linux/sockios.h>
#include <linux/virtio_net.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tcp.h"

#ifndef SOL_PACKET
#define SOL_PACKET 263
#endif

/*
 * splice(2) from a pipe to a socket (fs/splice.c splice_to_socket, Linux
 * 6.5 on) hands the socket at most 16 pipe buffers per sendmsg(), and a
 * packet socket makes a packet of every sendmsg(): one super-frame is the
 * header buffer and at most 15 buffers of the file, one per page (the page
 * cache splices page by page, large folios included).
 */
#define SPLICE_SENDMSG_BUFS 16

/* The pipe for file super-frames; splice_pages 0 where it cannot be had. */
static void splice_open(struct sl_gso *g)
{
	long page = sysconf(_SC_PAGESIZE);
	int sz, slots;

	g->page = page > 0 ? (uint32_t)page : 4096;
	g->splice_pages = 0;
	if (pipe2(g->pipe, O_CLOEXEC | O_NONBLOCK) < 0) {
		g->pipe[0] = g->pipe[1] = -1;
		return;
	}
	/* a pipe starts with 16 buffers, fewer once the user's pipe pages
	 * are used up (pipe-user-pages-soft); more would not help */
	sz = fcntl(g->pipe[1], F_GETPIPE_SZ);
	slots = sz > 0 ? sz / (int)g->page : 0;
	if (slots > SPLICE_SENDMSG_BUFS)
		slots = SPLICE_SENDMSG_BUFS;
	g->splice_pages = slots >= 3 ? (uint32_t)slots - 1 : 0;
}

static void splice_close(struct sl_gso *g)
{
	if (g->pipe[0] >= 0)
		close(g->pipe[0]);
	if (g->pipe[1] >= 0)
		close(g->pipe[1]);
	g->pipe[0] = g->pipe[1] = -1;
	g->splice_pages = 0;
}

/* errno values that say the interface or kernel cannot take super-frames
 * at all (as opposed to "not now") */
static bool gso_unsupported(int err)
{
	return err == EINVAL || err == EOPNOTSUPP || err == EPROTONOSUPPORT ||
	       err == EAFNOSUPPORT || err == EMSGSIZE;
}

/* Whether the interface segments TCP itself (ethtool's ETHTOOL_GTSO):
 * 1 yes, 0 no, -1 it cannot be told (taken as yes: the bypass, and a
 * failed send goes as frames). */
static int dev_tso(int fd, const char *ifname)
{
	struct ethtool_value ev = { .cmd = ETHTOOL_GTSO };
	struct ifreq ifr;

	memset(&ifr, 0, sizeof(ifr));
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", ifname);
	ifr.ifr_data = (char *)&ev;
	if (ioctl(fd, SIOCETHTOOL, &ifr) < 0)
		return -1;
	return ev.data ? 1 : 0;
}

/*
 * Opens the packet socket for eng's interface, as cfg.tx_gso says: auto
 * leaves super-frames off where anything fails, on reports the failure
 * (-errno, what failed in err).
 */
int gso_open(struct sl_engine *eng, int ifindex, char *err, size_t errlen)
{
	struct sl_gso *g = &eng->gso;
	struct sockaddr_ll sll;
	const char *what;
	int one = 1, sndbuf = 4 << 20, rc;

	g->fd = -1;
	g->pipe[0] = g->pipe[1] = -1;
	g->splice_pages = 0;
	g->on = false;
	g->capture = false;
	g->want = eng->cfg.tx_gso != SL_TX_GSO_OFF;
	eng->ctr.tx_gso_available = 0;
	eng->ctr.tx_gso_software = 0;
	if (!g->want)
		return 0;
	g->fd = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (g->fd < 0) {
		rc = -errno;
		what = "socket(AF_PACKET, SOCK_RAW)";
		goto out_err;
	}
	if (setsockopt(g->fd, SOL_PACKET, PACKET_VNET_HDR, &one, sizeof(one)) < 0) {
		rc = -errno;
		what = "setsockopt(PACKET_VNET_HDR)";
		goto out_socket;
	}
	/* packet(7): skip the qdisc layer, as AF_XDP frames do (measured on
	 * the lab's veth: as fast as through its noqueue qdisc, or a few
	 * percent faster); an older kernel without it uses the qdisc.  Not
	 * without TSO, where only the qdisc path segments, in software: auto
	 * sends frames there (as many packets reach the driver either way,
	 * and on veth the receiver accounts the software-cut segments as
	 * more memory, ~3 KiB each against 2.3 for a frame: a smaller window
	 * for us); on asks for super-frames, and gets them so */
	if (dev_tso(g->fd, eng->cfg.ifname) == 0) {
		if (eng->cfg.tx_gso != SL_TX_GSO_ON) {
			close(g->fd);
			g->fd = -1;
			g->want = false;	/* auto: frames, as by choice */
			return 0;
		}
		eng->ctr.tx_gso_software = 1;
	} else {
		(void)setsockopt(g->fd, SOL_PACKET, PACKET_QDISC_BYPASS, &one, sizeof(one));
	}
	/* socket(7): a NIC holds each skb until its TX completion, and the
	 * default send buffer (wmem_default) is a few super-frames; more,
	 * where we may (EAGAIN only sends a run as frames, it loses nothing) */
	if (setsockopt(g->fd, SOL_SOCKET, SO_SNDBUFFORCE, &sndbuf, sizeof(sndbuf)) < 0)
		(void)setsockopt(g->fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
	memset(&sll, 0, sizeof(sll));
	sll.sll_family = AF_PACKET;
	sll.sll_protocol = 0;	/* receive nothing */
	sll.sll_ifindex = ifindex;
	if (bind(g->fd, (struct sockaddr *)&sll, sizeof(sll)) < 0) {
		rc = -errno;
		what = "bind() to the interface";
		goto out_socket;
	}
	g->on = true;
	eng->ctr.tx_gso_available = 1;
	splice_open(g);
	return 0;

out_socket:
	close(g->fd);
	g->fd = -1;
	eng->ctr.tx_gso_software = 0;
out_err:
	if (eng->cfg.tx_gso != SL_TX_GSO_ON)
		return 0;	/* auto: per-segment frames, tx_gso_available 0 */
	sl_errf(err, errlen, "tx_gso on: GSO super-frames on %s: %s failed",
		eng->cfg.ifname, what);
	return rc;
}

/* Test engines: super-frames go to the TX capture when tx_gso is "on". */
void gso_open_test(struct sl_engine *eng)
{
	struct sl_gso *g = &eng->gso;

	long page = sysconf(_SC_PAGESIZE);

	g->fd = -1;
	g->pipe[0] = g->pipe[1] = -1;
	g->capture = eng->cfg.tx_gso == SL_TX_GSO_ON;
	g->on = g->want = g->capture;
	eng->ctr.tx_gso_available = g->on;
	/* file runs are cut as a real engine's are; their bytes are read */
	g->page = page > 0 ? (uint32_t)page : 4096;
	g->splice_pages = SPLICE_SENDMSG_BUFS - 1;
}

void gso_close(struct sl_engine *eng)
{
	if (eng->gso.fd >= 0)
		close(eng->gso.fd);
	eng->gso.fd = -1;
	if (!eng->gso.capture)
		splice_close(&eng->gso);
	eng->gso.on = false;
}

/* One sendmsg() of iov, or into the test capture.  0 or -errno. */
static int send_iov(struct sl_engine *eng, const struct iovec *iov, uint32_t niov)
{
	struct sl_gso *g = &eng->gso;
	struct msghdr msg;
	ssize_t n;

	if (g->capture)
		return xsk_capture(eng, iov, niov, SL_TX_GSO);
	memset(&msg, 0, sizeof(msg));
	msg.msg_iov = (struct iovec *)iov;
	msg.msg_iovlen = niov;
	do
		n = sendmsg(g->fd, &msg, MSG_DONTWAIT);
	while (n < 0 && errno == EINTR);
	if (n >= 0)
		return 0;
	return -errno;
}

/* One super-frame handed to the kernel: the counters all sends share. */
static void count_sent(struct sl_engine *eng, const struct gso_frame *g)
{
	eng->ctr.tx_packets++;
	eng->ctr.tx_bytes += g->hdr_len + g->payload_len;
	eng->ctr.tx_gso_frames++;
	eng->ctr.tx_gso_bytes += g->payload_len;
}

/* After a failed send: count it, and stop for good where it can never
 * work (the caller sends the run as separate frames either way). */
static int send_failed(struct sl_engine *eng, int rc)
{
	eng->ctr.tx_gso_errors++;
	if (gso_unsupported(-rc)) {
		eng->gso.on = false;
		eng->ctr.tx_gso_available = 0;
		eng->ctr.tx_gso_software = 0;
	}
	return rc;
}

/*
 * Sends one super-frame built by tcp_out.c.  Returns 0 when the kernel took
 * it (or the link impairment did), -errno when not: the caller then sends
 * the segments as frames of their own, so nothing is lost either way.
 */
static void put_vnet_hdr(struct gso_frame *g)
{
	struct virtio_net_hdr vh;

	memset(&vh, 0, sizeof(vh));
	vh.flags = VIRTIO_NET_HDR_F_NEEDS_CSUM;
	vh.gso_type = VIRTIO_NET_HDR_GSO_TCPV4;
	vh.hdr_len = (uint16_t)g->hdr_len;
	vh.gso_size = g->gso_size;
	vh.csum_start = 14 + 20;	/* the TCP header, after Ethernet and IPv4 */
	vh.csum_offset = 16;		/* struct tcphdr's check */
	memcpy(g->buf, &vh, GSO_VNET_HLEN);
}

int gso_xmit(struct sl_engine *eng, struct gso_frame *g)
{
	int rc;

	if (!eng->gso.on)
		return -EOPNOTSUPP;
	put_vnet_hdr(g);
	g->iov[0].iov_base = g->buf;
	g->iov[0].iov_len = GSO_VNET_HLEN + g->hdr_len;
	if (eng->impair) {
		/* the test's link impairment sees the super-frame as one packet */
		uint32_t len = GSO_VNET_HLEN + g->hdr_len + g->payload_len, off = 0, i;
		uint8_t *flat = malloc(len);
		bool taken;

		if (!flat)
			return -ENOMEM;
		for (i = 0; i < g->niov; i++) {
			memcpy(flat + off, g->iov[i].iov_base, g->iov[i].iov_len);
			off += (uint32_t)g->iov[i].iov_len;
		}
		taken = impair_tx_gso(eng, flat, len);
		free(flat);
		if (taken)
			goto sent;
	}
	rc = send_iov(eng, g->iov, g->niov);
	if (rc)
		return send_failed(eng, rc);
sent:
	count_sent(eng, g);
	return 0;
}

/*
 * A super-frame held by the link impairment (virtio header included),
 * sent now.  The TX ring's frames were queued before it: they go first.
 */
int gso_xmit_copy(struct sl_engine *eng, const uint8_t *data, uint32_t len)
{
	struct iovec iov = { .iov_base = (void *)data, .iov_len = len };
	int rc;

	if (!eng->gso.on)
		return -EOPNOTSUPP;
	if (!xsk_tx_gone(eng, eng->xsk.tx_queued ? eng->xsk.tx_gen : eng->xsk.tx_gen - 1))
		return -EAGAIN;
	rc = send_iov(eng, &iov, 1);
	if (rc)
		return send_failed(eng, rc);
	eng->ctr.tx_packets++;
	eng->ctr.tx_bytes += len - GSO_VNET_HLEN;
	return 0;
}

/*
 * Sends one super-frame whose payload is g->payload_len bytes of the file
 * fd at off, with no copy in user space: the virtio and packet headers are
 * written into the pipe, the file's pages spliced in behind them (page
 * references, no copy), and the pipe spliced to the packet socket, whose
 * sendmsg() copies header and pages into one skb (packet_snd).  The caller
 * keeps the run within splice_pages pages.  Returns 0, or -errno with
 * nothing sent (the caller sends the segments as frames): -ENODATA when
 * the file gave fewer bytes (truncated: the frames' reads will say so).
 */
int gso_xmit_file(struct sl_engine *eng, struct gso_frame *g, int fd, uint64_t off)
{
	struct sl_gso *gs = &eng->gso;
	uint32_t hlen = GSO_VNET_HLEN + g->hdr_len, total = hlen + g->payload_len;
	loff_t foff = (loff_t)off;
	ssize_t n;
	int rc;

	if (!gs->on || gs->fd < 0 || gs->pipe[1] < 0)
		return -EOPNOTSUPP;
	put_vnet_hdr(g);
	do
		n = write(gs->pipe[1], g->buf, hlen);
	while (n < 0 && errno == EINTR);
	if (n != (ssize_t)hlen) {
		rc = n < 0 ? -errno : -EIO;
		goto out_drain;
	}
	do
		n = splice(fd, &foff, gs->pipe[1], NULL, g->payload_len, SPLICE_F_NONBLOCK);
	while (n < 0 && errno == EINTR);
	if (n != (ssize_t)g->payload_len) {
		/* the file's fault, not the socket's: ENODATA for a short one */
		rc = n < 0 ? -errno : -ENODATA;
		splice_close(gs);
		splice_open(gs);
		return rc;
	}
	do
		n = splice(gs->pipe[0], NULL, gs->fd, NULL, total, SPLICE_F_NONBLOCK);
	while (n < 0 && errno == EINTR);
	if (n != (ssize_t)total) {
		/* nothing sent (EAGAIN: the socket's buffer is full), or, not
		 * expected, a part: the peer drops a short packet (its IPv4
		 * length says more) and the frames send the run again */
		rc = n < 0 ? -errno : -EIO;
		goto out_drain;
	}
	count_sent(eng, g);
	eng->ctr.tx_gso_splice_frames++;
	return 0;

out_drain:
	/* what is left in the pipe must not lead the next super-frame: a new
	 * pipe (rare: a full socket buffer, a truncated file) */
	splice_close(gs);
	splice_open(gs);
	return send_failed(eng, rc);
}

/*
 * File super-frames from a mapping of the file: one sendmsg() of the
 * headers and the mapped bytes, where the splice above takes three calls
 * (headers into the pipe, the file's pages in behind them, the pipe to the
 * socket) and a pipe buffer per page; the kernel copies either way
 * (packet_snd), from the page cache.  Only the kernel reads the mapping,
 * inside sendmsg(): a file truncated under it makes that copy fault, and
 * the call fails with EFAULT instead of raising SIGBUS here; the run then
 * goes the splice/read way, which finds the file short.
 *
 * Files under 8 MiB are not mapped: a mapping costs two calls, a fault
 * per 16 pages and the unmapping, about what the splices it saves cost
 * (measured: aiohttp sending 1 MiB files at one connection was slower
 * mapped, in 3 of 3 alternating pairs; 16 MiB and 1 GiB were faster).
 */
#define GSO_MAP_MIN (8u << 20)

/* Maps f once, at its first run: true if its runs can be sent mapped. */
bool gso_file_mapped(struct sl_engine *eng, struct tcp_file *f)
{
	void *p;

	if (f->map)
		return true;
	if (f->nomap || !eng->gso.on || eng->gso.fd < 0)
		return false;
	f->nomap = true;	/* unless the mapping below works */
	if (f->size < GSO_MAP_MIN || f->size > SIZE_MAX)
		return false;
	p = mmap(NULL, (size_t)f->size, PROT_READ, MAP_SHARED, f->fd, 0);
	if (p == MAP_FAILED) {
		eng->ctr.tx_gso_map_failures++;
		return false;	/* e.g. vm.max_map_count: spliced instead */
	}
	f->map = p;
	f->nomap = false;
	eng->ctr.files_mapped++;
	return true;
}

void gso_file_unmap(struct tcp_file *f)
{
	if (f->map)
		munmap((void *)f->map, (size_t)f->size);
	f->map = NULL;
}

/* The mapping cannot serve f's runs (grown past it, or a copy failed):
 * gone for good, its runs are spliced or read from now on. */
static int map_failed(struct tcp_file *f, int rc)
{
	gso_file_unmap(f);
	f->nomap = true;
	return rc;
}

/*
 * Sends one super-frame of g->payload_len bytes of f at off from f's
 * mapping (gso_file_mapped).  0, or -errno with nothing sent: the caller
 * sends the run another way.  A run beyond what was mapped (the file grew
 * since) or a failed copy (EFAULT: truncated) unmaps f for good.
 */
int gso_xmit_mapped(struct sl_engine *eng, struct gso_frame *g, struct tcp_file *f,
		    uint64_t off)
{
	int rc;

	if (!f->map || off > f->size || f->size - off < g->payload_len) {
		eng->ctr.tx_gso_map_failures++;
		return map_failed(f, -ERANGE);
	}
	put_vnet_hdr(g);
	g->iov[0].iov_base = g->buf;
	g->iov[0].iov_len = GSO_VNET_HLEN + g->hdr_len;
	g->iov[1].iov_base = (void *)(f->map + off);
	g->iov[1].iov_len = g->payload_len;
	g->niov = 2;
	rc = send_iov(eng, g->iov, g->niov);
	if (rc == -EAGAIN)
		return rc;	/* the socket's buffer is full: later */
	if (rc) {
		eng->ctr.tx_gso_errors++;
		return map_failed(f, rc);
	}
	count_sent(eng, g);
	eng->ctr.tx_gso_mapped_frames++;
	return 0;
}
