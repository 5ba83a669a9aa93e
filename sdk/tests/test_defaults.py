"""Where a Client with no arguments gets its URL, token and endpoint: arguments, then
FERRY_URL / FERRY_TOKEN / FERRY_ENDPOINT, then client.json in Ferry's home (which
`ferry dev` writes), then the default URL; and the `ferry` command's usage."""

from __future__ import annotations

import json

import pytest

from ferry import Client, FerryError
from ferry.cli import main as ferry_cli


@pytest.fixture
def home(tmp_path, monkeypatch):
    for var in ("FERRY_URL", "FERRY_TOKEN", "FERRY_ENDPOINT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("FERRY_HOME", str(tmp_path))
    return tmp_path


def write(home, **saved):
    (home / "client.json").write_text(json.dumps(saved))


def test_client_json_is_used_when_nothing_else_is_given(home):
    write(home, url="http://127.0.0.1:9100", token="fy_saved", endpoint_id="ep-1")
    c = Client()
    assert (c.url, c.token, c.endpoint_id) == ("http://127.0.0.1:9100", "fy_saved", "ep-1")


def test_arguments_and_variables_win_over_client_json(home, monkeypatch):
    write(home, url="http://127.0.0.1:9100", token="fy_saved", endpoint_id="ep-1")
    monkeypatch.setenv("FERRY_ENDPOINT", "ep-env")
    c = Client(token="fy_arg")
    assert (c.url, c.token, c.endpoint_id) == ("http://127.0.0.1:9100", "fy_arg", "ep-env")
    monkeypatch.setenv("FERRY_URL", "http://other:1")
    monkeypatch.setenv("FERRY_TOKEN", "fy_env")
    # A URL given otherwise: a saved token is for its own URL, so none of it is used.
    c = Client()
    assert (c.url, c.token) == ("http://other:1", "fy_env")


def test_without_client_json_the_defaults_stay(home):
    c = Client()
    assert (c.url, c.token, c.endpoint_id) == ("http://127.0.0.1:8000", None, None)
    with pytest.raises(FerryError, match="no endpoint named"):
        c._endpoint(None)


def test_a_broken_client_json_is_named(home):
    (home / "client.json").write_text("{not json")
    with pytest.raises(FerryError, match="client.json"):
        Client()
    (home / "client.json").write_text("[1, 2]")
    with pytest.raises(FerryError, match="must hold a JSON object"):
        Client()


def test_the_ferry_command_says_what_it_has(capsys):
    assert ferry_cli([]) == 0
    assert "dev" in capsys.readouterr().out
    assert ferry_cli(["nonsense"]) == 2
    assert "unknown command 'nonsense'" in capsys.readouterr().err
