"""Serialization of functions, arguments and results.

Ferry uses the Globus Compute serialization format, so the same worker can run tasks
from either SDK. A serialized buffer is a string: a two-character strategy id, a newline,
then the body:

==== ======================================================================
id   body
==== ======================================================================
00   base64 of ``dill.dumps(obj)`` (data: arguments, results, exceptions)
01   base64 of ``dill.dumps(fn)`` (code: lambdas, closures, ``__main__``)
03   base64 of ``dill.dumps((name, source))``; 04 is the same
11   ``json.dumps(obj)``
12   a packed buffer of alternative code serializations (first that loads wins)
13   a packed buffer of alternative data serializations
sd   ``name + ":" + source``; st is the same
==== ======================================================================

Several buffers travel as one string with :func:`pack`: each buffer behind its length in
characters and a newline.

>>> unpack(pack(["00\\nabc", "11\\n[1]"]))
['00\\nabc', '11\\n[1]']
>>> deserialize_data(serialize_data({"a": 1}))
{'a': 1}
"""

from __future__ import annotations

import base64
import binascii
import inspect
import io
import json
import pickle
import sys
import sysconfig
import textwrap
import types
from typing import Any, Callable, Sequence

import dill

from .errors import DeserializationError

__all__ = [
    "pack",
    "unpack",
    "serialize_data",
    "serialize_data_bytes",
    "deserialize_data",
    "serialize_function",
    "deserialize_function",
    "pack_args",
    "unpack_args",
]


def pack(buffers: Sequence[str]) -> str:
    """Joins buffers into one string: ``"<len>\\n<buffer>"`` for each."""
    return "".join(f"{len(b)}\n{b}" for b in buffers)


def unpack(packed: str) -> list[str]:
    """Splits a string made by :func:`pack` back into its buffers."""
    out: list[str] = []
    i = 0
    n = len(packed)
    while i < n:
        nl = packed.find("\n", i)
        if nl < 0:
            raise DeserializationError(f"packed buffer: no length line at offset {i}")
        head = packed[i:nl]
        if not head.isdigit():
            raise DeserializationError(f"packed buffer: bad length {head[:20]!r} at offset {i}")
        length = int(head)
        start = nl + 1
        end = start + length
        if end > n:
            raise DeserializationError(f"packed buffer: a {length}-character buffer runs past the end")
        out.append(packed[start:end])
        i = end
    return out


def _b64(data: bytes) -> str:
    # MIME base64, a newline after every 76 characters (what the "base64" codec
    # writes); up to 57 bytes make one line, which binascii writes alone, faster.
    if 0 < len(data) <= 57:
        return binascii.b2a_base64(data).decode("ascii")
    return base64.encodebytes(data).decode("ascii")


def _unb64(text: str) -> bytes:
    # What the "base64" codec does (newlines are skipped), without its lookup.
    return binascii.a2b_base64(text.encode("ascii"))


_SCALARS = frozenset({int, float, complex, str, bytes, bool, type(None)})


def _plain(obj: Any, depth: int = 0) -> bool:
    """Whether ``obj`` is builtin data only (scalars in small tuples, lists, dicts),
    which the standard pickle writes exactly as dill would, many times faster."""
    kind = type(obj)
    if kind in _SCALARS:
        return True
    if depth >= 3:
        return False
    if kind is tuple or kind is list:
        if len(obj) > 64:
            return False
        for x in obj:
            if type(x) not in _SCALARS and not _plain(x, depth + 1):
                return False
        return True
    if kind is dict:
        return len(obj) <= 64 and all(type(k) is str and _plain(v, depth + 1) for k, v in obj.items())
    return False


class _PlainUnpickler(pickle.Unpickler):
    """Loads pickles of builtin data only: anything naming a class or function is
    refused, and goes to dill instead."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"{module}.{name} is not plain data")


def _loads(data: bytes) -> Any:
    try:
        return _PlainUnpickler(io.BytesIO(data)).load()
    except pickle.UnpicklingError:
        return dill.loads(data)


def serialize_data(obj: Any) -> str:
    """Serializes a value (strategy ``00``: a pickle any dill can load)."""
    if _plain(obj):
        return "00\n" + _b64(pickle.dumps(obj, protocol=dill.settings["protocol"]))
    return "00\n" + _b64(dill.dumps(obj))


def serialize_data_bytes(obj: Any) -> bytes:
    """:func:`serialize_data`, as ASCII bytes (what the Python host sends back)."""
    if _plain(obj):
        raw = pickle.dumps(obj, protocol=dill.settings["protocol"])
        if len(raw) <= 57:
            return b"00\n" + binascii.b2a_base64(raw)
        return b"00\n" + base64.encodebytes(raw)
    return serialize_data(obj).encode("ascii")


# Most tasks have no keyword arguments: their buffer is always the same.
_NO_KWARGS = serialize_data({})
_NO_KWARGS_TEXT = f"{len(_NO_KWARGS)}\n{_NO_KWARGS}"
_NO_KWARGS_TAIL = _NO_KWARGS_TEXT.encode("ascii")


def _by_value(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A copy of ``fn`` that dill pickles by value.

    dill pickles a function defined in an importable module by reference (module and
    name), which fails on an endpoint where the user's own module does not exist. A copy
    that claims to live in ``__main__`` is pickled with its code and the globals it uses.
    Functions from installed packages and the standard library stay by reference.
    """
    if not isinstance(fn, types.FunctionType) or fn.__module__ in ("__main__", None):
        return fn
    module = sys.modules.get(fn.__module__)
    path = getattr(module, "__file__", None) or ""
    installed = (
        not path
        or "site-packages" in path
        or "dist-packages" in path
        or path.startswith(sysconfig.get_paths()["stdlib"])
    )
    if installed:
        return fn
    copy = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__)
    copy.__kwdefaults__ = fn.__kwdefaults__
    copy.__doc__ = fn.__doc__
    copy.__qualname__ = fn.__qualname__
    copy.__module__ = "__main__"
    return copy


def serialize_function(fn: Callable[..., Any], source: bool = False) -> str:
    """Serializes a function by value (strategy ``01``, bytecode: it loads on this
    Python's major.minor only), or with ``source=True`` as its source text (``sd``,
    ``name:source``: any Python 3), as one packed buffer: what ``POST /v1/functions``
    takes as ``code``."""
    if not source:
        return pack(["01\n" + _b64(dill.dumps(_by_value(fn), recurse=True))])
    name = getattr(fn, "__name__", "")
    if not isinstance(fn, types.FunctionType) or name == "<lambda>":
        raise TypeError(f"source=True needs a function defined with def, not {fn!r}")
    if fn.__closure__:
        raise TypeError(f"source=True: {name} uses variables of an enclosing function, which its source does not carry")
    try:
        text = textwrap.dedent(inspect.getsource(fn))
    except (OSError, TypeError) as e:
        raise TypeError(f"source=True: the source of {name} cannot be read: {e}") from e
    return pack([f"sd\n{name}:{text}"])


def _split(buffer: str) -> tuple[str, str]:
    if len(buffer) < 3 or buffer[2] != "\n":
        raise DeserializationError(f"not a serialized buffer: {buffer[:20]!r}")
    return buffer[:2], buffer[3:]


def _from_source(name: str, source: str) -> Callable[..., Any]:
    namespace: dict[str, Any] = {}
    exec(compile(source, f"<ferry function {name}>", "exec"), namespace)  # noqa: S102
    try:
        return namespace[name]
    except KeyError:
        raise DeserializationError(f"the source does not define {name!r}") from None


def _load(buffer: str) -> Any:
    if buffer[:3] == "00\n":
        # The common case (every value Ferry's SDK and host write), read directly.
        try:
            return _loads(binascii.a2b_base64(buffer[3:]))
        except Exception as e:
            raise DeserializationError(f"cannot load a '00' buffer: {type(e).__name__}: {e}") from e
    sid, body = _split(buffer)
    try:
        if sid == "00":
            return _loads(_unb64(body))
        if sid in ("01", "02"):
            return dill.loads(_unb64(body))
        if sid in ("03", "04"):
            name, source = dill.loads(_unb64(body))
            return _from_source(name, source)
        if sid in ("st", "sd"):
            name, _, source = body.partition(":")
            return _from_source(name, source)
        if sid == "11":
            return json.loads(body)
        if sid in ("12", "13"):
            errors = []
            for alternative in unpack(body):
                try:
                    return _load(alternative)
                except Exception as e:  # noqa: BLE001 - try the next one
                    errors.append(f"{alternative[:2]}: {e}")
            raise DeserializationError("no alternative could be loaded: " + "; ".join(errors))
    except DeserializationError:
        raise
    except Exception as e:
        raise DeserializationError(f"cannot load a {sid!r} buffer: {type(e).__name__}: {e}") from e
    raise DeserializationError(f"unknown serialization strategy {sid!r}")


def deserialize_data(buffer: str) -> Any:
    """Reads back a value serialized by any data strategy."""
    return _load(buffer)


def _missing_module(e: BaseException, what: str) -> DeserializationError | None:
    """A clear error (``what``: "the function needs") when loading failed for a module
    this Python lacks (the usual
    cause: the function was written where ``numpy`` is installed, and runs where it is
    not), else None."""
    cause = e if isinstance(e, ModuleNotFoundError) else e.__cause__
    if not isinstance(cause, ModuleNotFoundError) or not cause.name:
        return None
    version = ".".join(map(str, sys.version_info[:3]))
    return DeserializationError(
        f"{what} module {cause.name!r}, which the endpoint's Python ({sys.executable} {version}) "
        f"does not have: install it there, or run the endpoint with a Python that has it"
    )


def deserialize_function(code: str) -> Callable[..., Any]:
    """Reads back a function: a packed buffer (the first buffer that loads wins) or a
    bare serialized buffer. One that needs a module this Python lacks says which."""
    try:
        buffers = unpack(code)
    except DeserializationError:
        buffers = [code]
    errors = []
    for buffer in buffers:
        try:
            fn = _load(buffer)
        except DeserializationError as e:
            missing = _missing_module(e, "the function needs")
            if missing is not None:
                raise missing from e.__cause__
            errors.append(str(e))
            continue
        if not callable(fn):
            raise DeserializationError(f"the function buffer holds a {type(fn).__name__}, not a callable")
        return fn
    raise DeserializationError("cannot load the function: " + "; ".join(errors or ["no buffer"]))


def pack_args(args: Sequence[Any] = (), kwargs: dict[str, Any] | None = None) -> str:
    """The payload of a Python task: packed ``(args, kwargs)``."""
    packed_args = serialize_data(tuple(args))
    if kwargs:
        return pack([packed_args, serialize_data(dict(kwargs))])
    return f"{len(packed_args)}\n{packed_args}{_NO_KWARGS_TEXT}"


def _args_fast(payload: bytes) -> tuple[Any, ...] | None:
    """The arguments of the common payload, read straight from its bytes: pickled
    arguments (``00``) and no keyword arguments. ``None`` for any other payload."""
    if not payload.endswith(_NO_KWARGS_TAIL):
        return None
    nl = payload.find(b"\n", 0, 12)
    if nl <= 0 or not payload[:nl].isdigit():
        return None
    end = len(payload) - len(_NO_KWARGS_TAIL)
    if nl + 1 + int(payload[:nl]) != end or payload[nl + 1 : nl + 4] != b"00\n":
        return None
    args = _loads(binascii.a2b_base64(payload[nl + 4 : end]))
    return tuple(args) if isinstance(args, (list, tuple)) else None


def unpack_args(payload: str | bytes) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Reads back a payload made by :func:`pack_args` (as text, or as its UTF-8 bytes);
    an empty payload is no arguments."""
    if not payload:
        return (), {}
    if isinstance(payload, bytes):
        try:
            args = _args_fast(payload)
        except Exception as e:
            raise (
                _missing_module(e, "the task's arguments need")
                or DeserializationError(f"cannot load a '00' buffer: {type(e).__name__}: {e}")
            ) from e
        if args is not None:
            return args, {}
        payload = payload.decode("utf-8")
    buffers = unpack(payload)
    if len(buffers) != 2:
        raise DeserializationError(f"a task payload holds 2 buffers (args, kwargs), not {len(buffers)}")
    try:
        args = deserialize_data(buffers[0])
        kwargs = {} if buffers[1] == _NO_KWARGS else deserialize_data(buffers[1])
    except DeserializationError as e:
        missing = _missing_module(e, "the task's arguments need")
        if missing is not None:
            raise missing from e.__cause__
        raise
    if not isinstance(args, (list, tuple)) or not isinstance(kwargs, dict):
        raise DeserializationError("a task payload must hold a sequence of args and a dict of kwargs")
    return tuple(args), kwargs
