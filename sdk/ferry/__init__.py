"""Ferry's Python SDK: run Python functions and shell commands on Ferry endpoints.

>>> from ferry import Client, Executor                             # doctest: +SKIP
>>> c = Client("http://127.0.0.1:8000", token="fy_...")            # doctest: +SKIP
>>> fid = c.register_function(lambda x: x * 2)                     # doctest: +SKIP
>>> c.get_result(c.run(21, endpoint_id=EP, function_id=fid))       # doctest: +SKIP
42
"""

from .application import Application, file_input, save_outputs
from .client import Batch, Client, Session, ShellFunction
from .session import Outcome
from .errors import (
    APIError,
    ApplicationFailed,
    DeserializationError,
    FerryError,
    RemoteExecutionError,
    TaskPending,
)
from .executor import Executor
from .task import run_dir

__all__ = [
    "APIError",
    "Application",
    "ApplicationFailed",
    "Batch",
    "Client",
    "DeserializationError",
    "Executor",
    "FerryError",
    "RemoteExecutionError",
    "Outcome",
    "Session",
    "ShellFunction",
    "TaskPending",
    "file_input",
    "save_outputs",
    "run_dir",
]
__version__ = "0.1.0"
