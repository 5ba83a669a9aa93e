"""Fixtures for the SDK's end-to-end tests: one real Ferry stack for the session
(see ferrystack.py): on RabbitMQ and Redis, or with ``FERRY_TEST_BACKENDS=embedded``
under ``ferry dev`` on its embedded store and broker; ``scripts/test`` builds the
binaries first and runs test_sdk.py both ways."""

from __future__ import annotations

import pytest

from ferrystack import make_stack


@pytest.fixture(scope="session")
def stack():
    s = make_stack()
    s.start()
    yield s
    s.stop()


@pytest.fixture()
def client(stack):
    from ferry import Client

    return Client(stack.url, token=stack.token)
