"""Serialization round trips and bad buffers."""

import codecs
import json

import dill
import pytest

from ferry.errors import DeserializationError
from ferry.serialize import _NO_KWARGS_TAIL  # noqa: PLC2701 - the shape the shortcut reads
from ferry.serialize import (
    deserialize_data,
    deserialize_function,
    pack,
    pack_args,
    serialize_data,
    serialize_data_bytes,
    serialize_function,
    unpack,
    unpack_args,
)


def square(x):
    return x * x


def test_data_round_trips():
    for value in [42, "héllo", [1, {"a": (2, 3)}], None, b"\x00\xff", {1, 2}]:
        assert deserialize_data(serialize_data(value)) == value


def test_functions_lambdas_and_closures_round_trip():
    k = 3
    for fn, arg, want in [(square, 4, 16), (lambda y: y + 1, 1, 2), (lambda y: y * k, 5, 15)]:
        assert deserialize_function(serialize_function(fn))(arg) == want


def test_a_function_defined_in_main_travels_by_value():
    namespace = {"__name__": "__main__"}
    exec("def triple(x):\n    return 3 * x\n", namespace)
    code = serialize_function(namespace["triple"])
    assert deserialize_function(code)(5) == 15


def test_pack_counts_characters_not_bytes():
    buffers = ["st\nf:def f(): return 'é'", "11\n\"ünï\""]
    assert unpack(pack(buffers)) == buffers
    assert pack(["é"]) == "1\né"


def test_args_round_trip_and_empty_payload_means_no_arguments():
    assert unpack_args(pack_args((1, "a"), {"b": 2})) == ((1, "a"), {"b": 2})
    assert unpack_args("") == ((), {})


@pytest.mark.parametrize(
    "args, kwargs",
    [((1, "a"), {}), ((), {}), (([1, 2], {"k": None}), {}), (("é",), {"b": 2}), ((square,), {})],
)
def test_args_read_from_bytes_as_from_text(args, kwargs):
    # The host reads payloads as bytes, by a shortcut for the common (pickled, no
    # keyword arguments) shape; every payload must read the same either way.
    payload = pack_args(args, kwargs)
    from_bytes = unpack_args(payload.encode())
    assert from_bytes == unpack_args(payload)
    assert from_bytes[0][:1] != (square,) or from_bytes[0][0](3) == 9


@pytest.mark.parametrize(
    "bad",
    [b"5\n00\n!!" + _NO_KWARGS_TAIL, b"7\n00\nAAAA" + _NO_KWARGS_TAIL, b"99\n00\nAAAA", b"x" + pack_args((1,), {}).encode()],
)
def test_malformed_payload_bytes_raise_a_clear_error(bad):
    with pytest.raises(DeserializationError):
        unpack_args(bad)


def test_results_as_bytes_read_back_as_text():
    for value in [7, "x" * 500, {"a": [1, 2.5]}, {1, 2}, square]:
        got = deserialize_data(serialize_data_bytes(value).decode("ascii"))
        assert got == value or (callable(got) and got(2) == 4)


@pytest.mark.parametrize("strategy", ["st", "sd"])
def test_source_strategies_load(strategy):
    fn = deserialize_function(pack([f"{strategy}\nadd:def add(a, b):\n    return a + b\n"]))
    assert fn(2, 3) == 5


@pytest.mark.parametrize("strategy", ["03", "04"])
def test_dill_source_strategies_load(strategy):
    body = codecs.encode(dill.dumps(("inc", "def inc(a):\n    return a + 1\n")), "base64").decode()
    assert deserialize_function(f"{strategy}\n{body}")(1) == 2


def test_json_and_combined_strategies_load():
    assert deserialize_data("11\n" + json.dumps({"x": [1, 2]})) == {"x": [1, 2]}
    combined = "13\n" + pack(["zz\nnope", "11\n[7]"])
    assert deserialize_data(combined) == [7]


@pytest.mark.parametrize(
    "bad",
    ["", "9\nshort", "x\nabc", "zz\nbody", "00\n!!!not base64!!!", "abc"],
)
def test_malformed_buffers_raise_a_clear_error(bad):
    with pytest.raises(DeserializationError):
        deserialize_data(bad)


def test_a_non_callable_function_buffer_is_refused():
    with pytest.raises(DeserializationError, match="not a callable"):
        deserialize_function(pack([serialize_data(5)]))


def test_a_function_needing_a_module_the_endpoint_lacks_says_which(tmp_path, monkeypatch):
    """Written where a module exists, run where it does not: the error names the module
    and the Python, not the serialization's internals."""
    import sys

    import pytest

    from ferry.errors import DeserializationError
    from ferry.serialize import deserialize_function, pack_args, serialize_function, unpack_args

    (tmp_path / "ferry_test_only_here.py").write_text("VALUE = 21\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import ferry_test_only_here as only_here

    code = serialize_function(lambda: only_here.VALUE * 2)
    payload = pack_args((only_here,), {"m": only_here})
    # Now on "the endpoint": the module is gone.
    monkeypatch.delitem(sys.modules, "ferry_test_only_here")
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(tmp_path)])
    with pytest.raises(DeserializationError) as e:
        deserialize_function(code)
    message = str(e.value)
    assert "the function needs module 'ferry_test_only_here'" in message, message
    assert sys.executable in message and "not a serialized buffer" not in message, message
    with pytest.raises(DeserializationError, match="the task's arguments need module 'ferry_test_only_here'"):
        unpack_args(payload)
