/* SPDX-License-Identifier: MIT */
/*
 * api.c - the engine's hot functions as one constant table (struct sl_api),
 * for the loop core in native/py/, which is a separate extension module.
 */
#include "specloop.h"

static const struct sl_api api = {
	.size = sizeof(struct sl_api),
	.engine_poll = sl_engine_poll,
	.engine_events = sl_engine_events,
	.engine_flush = sl_engine_flush,
	.engine_pending = sl_engine_pending,
	.engine_next_timer = sl_engine_next_timer,
	.engine_rx_ready = sl_engine_rx_ready,
	.conn_write = sl_conn_write,
	.conn_setopt = sl_conn_setopt,
	.engine_active_conns = sl_engine_active_conns,
};

const struct sl_api *sl_api_get(void)
{
	return &api;
}
