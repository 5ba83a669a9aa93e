"""Fixtures for the SDK's end-to-end tests: one real Ferry stack for the session
(see ferrystack.py); ``scripts/test`` builds the binaries first."""

from __future__ import annotations

import pytest

from ferrystack import Stack


@pytest.fixture(scope="session")
def stack():
    s = Stack()
    s.start()
    yield s
    s.stop()


@pytest.fixture()
def client(stack):
    from ferry import Client

    return Client(stack.url, token=stack.token)
