"""Use the unmodified ``globus-compute-sdk`` against a Ferry service.

Ferry serves the REST routes and result queues that ``globus_compute_sdk.Client`` and
``Executor`` use. Two things differ from Globus Compute: the service URL is yours, and
the token is a static Ferry token instead of a Globus Auth login. :func:`client` builds a
real ``globus_compute_sdk.Client`` with both:

>>> from ferry.globus_compat import client                         # doctest: +SKIP
>>> from globus_compute_sdk import Executor                         # doctest: +SKIP
>>> gc = client("http://127.0.0.1:8000", "fy_...")                  # doctest: +SKIP
>>> with Executor(endpoint_id=EP, client=gc) as ex:                 # doctest: +SKIP
...     print(ex.submit(pow, 2, 10).result())
1024

Always pass ``client=`` to ``Executor``: without it the SDK starts a Globus login.
"""

from __future__ import annotations

import os
from typing import Any


def client(url: str | None = None, token: str | None = None, ca_file: str | None = None, **kwargs: Any):
    """A ``globus_compute_sdk.Client`` that talks to the Ferry at ``url`` with ``token``
    (defaults: ``$FERRY_URL``, ``$FERRY_TOKEN``). ``ca_file`` (default
    ``$FERRY_CA_FILE``) is the CA bundle its HTTPS requests trust, instead of the
    system's. Extra keyword arguments go to ``Client`` (e.g.
    ``code_serialization_strategy``)."""
    import globus_sdk
    from globus_compute_sdk import Client
    from globus_compute_sdk.sdk.client import _ComputeWebClient
    from globus_sdk.transport import RequestsTransport

    url = (url or os.environ.get("FERRY_URL") or "http://127.0.0.1:8000").rstrip("/")
    token = token or os.environ.get("FERRY_TOKEN")
    if not token:
        raise ValueError("a Ferry token is needed: pass token= or set FERRY_TOKEN")
    authorizer = globus_sdk.AccessTokenAuthorizer(token)
    gc = Client(authorizer=authorizer, do_version_check=False, **kwargs)
    # The SDK picks its URL from a fixed table; point this one client at Ferry instead.
    gc.web_service_address = url
    ca_file = ca_file or os.environ.get("FERRY_CA_FILE") or None
    transport = RequestsTransport(verify_ssl=ca_file) if ca_file else None
    gc._compute_web_client = _ComputeWebClient(base_url=url, authorizer=authorizer, transport=transport)
    gc.version_check()
    return gc
