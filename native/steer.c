/* SPDX-License-Identifier: MIT */
/*
 * steer.c - the XDP steering program (bpf/steer.bpf.c) and its maps.
 *
 * The program's object file is compiled into this library (steer_bpf_obj.h,
 * made by build.py) and loaded with libbpf.  It is attached through a
 * bpf_link, never through netlink: the link belongs to our file descriptor,
 * so the kernel detaches the program when the process dies, kill -9
 * included, and a crashed server never leaves its ports blackholed.
 */
#include <net/if.h>
#include <stdio.h>
#include <unistd.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <linux/if_link.h>

#include "internal.h"
#include "steer_bpf_obj.h"

static int attach(struct sl_steer *s, int ifindex, uint32_t xdp_flags)
{
	LIBBPF_OPTS(bpf_link_create_opts, opts, .flags = xdp_flags);
	int fd = bpf_link_create(s->prog_fd, ifindex, BPF_XDP, &opts);

	return fd < 0 ? -errno : fd;
}

int steer_open(struct sl_steer *s, const char *ifname, int ifindex, int mode,
	       char *err, size_t errlen)
{
	LIBBPF_OPTS(bpf_object_open_opts, oopts, .object_name = "specloop_steer");
	struct bpf_program *prog;
	int rc;

	memset(s, 0, sizeof(*s));
	s->prog_fd = s->link_fd = s->ports_fd = s->xsks_fd = -1;
	s->ifindex = ifindex;

	s->obj = bpf_object__open_mem(steer_bpf_obj, sizeof(steer_bpf_obj), &oopts);
	if (!s->obj) {
		rc = -errno;
		sl_errf(err, errlen, "opening the XDP program object");
		return rc;
	}
	rc = bpf_object__load(s->obj);
	if (rc) {
		rc = rc < 0 ? rc : -rc;
		sl_errf(err, errlen, "loading the XDP program into the kernel");
		goto out_obj;
	}
	prog = bpf_object__find_program_by_name(s->obj, "specloop_steer");
	s->ports_fd = bpf_object__find_map_fd_by_name(s->obj, "ports");
	s->xsks_fd = bpf_object__find_map_fd_by_name(s->obj, "xsks");
	if (!prog || s->ports_fd < 0 || s->xsks_fd < 0) {
		rc = -ENOENT;
		sl_errf(err, errlen, "the XDP program object lacks its program or maps");
		goto out_obj;
	}
	s->prog_fd = bpf_program__fd(prog);

	if (mode == SL_XDP_NATIVE || mode == SL_XDP_AUTO) {
		rc = attach(s, ifindex, XDP_FLAGS_DRV_MODE);
		if (rc >= 0) {
			s->mode = SL_XDP_NATIVE;
			goto attached;
		}
		if (mode == SL_XDP_NATIVE || rc == -EBUSY || rc == -EEXIST ||
		    rc == -EPERM) {
			sl_errf(err, errlen, "attaching XDP to %s in native mode%s",
				ifname, rc == -EBUSY || rc == -EEXIST ?
				" (another XDP program is attached to it)" : "");
			goto out_obj;
		}
	}
	rc = attach(s, ifindex, XDP_FLAGS_SKB_MODE);
	if (rc < 0) {
		sl_errf(err, errlen, "attaching XDP to %s in generic mode%s", ifname,
			rc == -EBUSY || rc == -EEXIST ?
			" (another XDP program is attached to it)" : "");
		goto out_obj;
	}
	s->mode = SL_XDP_GENERIC;
attached:
	s->link_fd = rc;
	return 0;

out_obj:
	bpf_object__close(s->obj);
	s->obj = NULL;
	s->prog_fd = s->ports_fd = s->xsks_fd = -1;
	return rc;
}

int steer_add_socket(struct sl_steer *s, uint32_t queue_id, int xsk_fd)
{
	if (bpf_map_update_elem(s->xsks_fd, &queue_id, &xsk_fd, BPF_ANY))
		return -errno;
	return 0;
}

int steer_port(struct sl_steer *s, uint16_t port, bool on)
{
	uint16_t key = (uint16_t)(port >> 8 | port << 8);	/* network order */
	uint8_t val = 1;

	if (s->ports_fd < 0)
		return 0;	/* a test engine steers nothing */
	if (on) {
		if (bpf_map_update_elem(s->ports_fd, &key, &val, BPF_ANY))
			return -errno;
	} else if (bpf_map_delete_elem(s->ports_fd, &key) && errno != ENOENT) {
		return -errno;
	}
	return 0;
}

void steer_close(struct sl_steer *s)
{
	if (!s->obj && s->link_fd < 0)
		return;
	/* closing the link detaches the program from the interface */
	if (s->link_fd >= 0)
		close(s->link_fd);
	if (s->obj)
		bpf_object__close(s->obj);
	memset(s, 0, sizeof(*s));
	s->prog_fd = s->link_fd = s->ports_fd = s->xsks_fd = -1;
}
