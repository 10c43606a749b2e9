"""aiohttp integration: static routes that the engine answers itself.

``add_static(app, prefix, directory)`` is aiohttp's ``add_static`` plus the
fast path: the ordinary aiohttp route serves the URLs everywhere (the
kernel path, and every request the fast path does not take), and on a
bypass loop the engine answers GET/HEAD for those files from pre-built
packets without waking Python.  Call it while building the app, as
aiohttp's own; the fast path comes up when the app's server starts
listening on a bypass loop.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from .static import StaticRoute, route_providers

__all__ = ["add_static"]

_ROUTES = web.AppKey("specloop_static_routes", list)
_FAST_STATUSES = (200, 206, 304, 416)


def add_static(app: web.Application, prefix: str, directory: Any, *,
               max_file_size: int = 16 << 20, memory_budget: int = 256 << 20,
               cache_control: str | None = None, follow_symlinks: bool = False,
               hand_back: bool = True, **aiohttp_options: Any) -> web.AbstractRoute:
    """Registers an aiohttp static route and, on a bypass loop, the fast path.

    ``max_file_size`` and ``memory_budget`` bound what is kept as packets
    (larger files are served by aiohttp, never refused); ``cache_control``
    adds that header to the file responses on both paths.  With
    ``hand_back=False`` a connection whose request went to the app stays
    the app's (one protocol object for its life: connection-bound auth
    such as NTLM); by default it comes back to the fast path once the app
    answered.  Other keyword arguments go to aiohttp's ``add_static``.
    """
    route = StaticRoute.make(prefix, directory, max_file_size=max_file_size,
                             memory_budget=memory_budget, cache_control=cache_control,
                             follow_symlinks=follow_symlinks, hand_back=hand_back)
    resource_route = app.router.add_static(prefix, directory,
                                           follow_symlinks=follow_symlinks, **aiohttp_options)
    if _ROUTES not in app:
        app[_ROUTES] = []
    app[_ROUTES].append(route)
    if cache_control:
        resource = resource_route.resource if hasattr(resource_route, "resource") \
            else resource_route

        async def add_cache_control(request: web.Request, response: web.StreamResponse) -> None:
            # the same header, on the same responses, as the fast path sends
            if (request.match_info.route.resource is resource
                    and response.status in _FAST_STATUSES):
                response.headers["Cache-Control"] = cache_control

        app.on_response_prepare.append(add_cache_control)
    return resource_route


def _routes_of_factory(factory: Any) -> list[StaticRoute]:
    """The routes of the aiohttp app behind a server's protocol factory
    (aiohttp's web_server.Server, whose request_handler is app._handle)."""
    handler = getattr(factory, "request_handler", None)
    app = getattr(handler, "__self__", None)
    if not isinstance(app, web.Application) or _ROUTES not in app:
        return []
    ka = getattr(factory, "_kwargs", {}).get("keepalive_timeout", 75.0)
    return [StaticRoute(**{**r.__dict__, "keepalive_timeout": ka}) for r in app[_ROUTES]]


route_providers.append(_routes_of_factory)
