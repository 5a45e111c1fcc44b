"""The HTTP server: a FastAPI application over the knowledge store, serving the JSON API
(OpenAPI at ``/docs``), the model geometry and the built web pages.

Modules: ``app`` (the factory), ``api`` (routes), ``auth`` (tokens and roles), ``geometry``
(loading, serving and locating clicks on models), ``limits`` (request size), ``schemas``
(request and response bodies), ``pages`` (the annotation tool and explorer).
"""

from kpengine.server.app import ServerConfig, create_app

__all__ = ["ServerConfig", "create_app"]
