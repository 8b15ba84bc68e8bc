"""The servers' exceptions. Each carries the HTTP status the apps answer with.

    CortexError
    ├── InvalidRequestError (400)                   bad input (cortex.errors); a body over the limit is 413
    └── ServerError
        ├── ConfigError                             a config file or environment value is invalid
        ├── AuthenticationError (401)               missing or wrong API key
        ├── ModelNotFoundError (404)                no such model under the neuron's model folders
        ├── ResponseNotFoundError (404)             no stored response has this id (the Responses store)
        ├── ModelBusyError (409)                    unload refused while requests are in flight
        ├── InsufficientMemoryError (507)           the model does not fit the neuron's memory budget
        ├── ModelLoadFailedError (500)              loading the model raised
        └── OverloadedError (503, Retry-After)      admission control refused the request
            ├── QueueFullError (429)                the bounded queue is full
            ├── QueueTimeoutError (503)             waited in the queue longer than the bound
            └── ShuttingDownError (503)             the server is draining

The apps turn any of these (and the library's own errors) into an error envelope in the caller's
dialect; see :mod:`cortex.server.edge`.
"""

from __future__ import annotations

from cortex.errors import CortexError


class ServerError(CortexError):
    """Base class of the server-side failures below."""

    http_status = 500


class ConfigError(ServerError):
    """A config value is invalid. The message names the file (and line or key) at fault."""

    def __init__(self, message: str, *, file: str | None = None, key: str | None = None) -> None:
        where = ": ".join(part for part in (file, key) if part)
        super().__init__(f"{where}: {message}" if where else message)
        self.file = file
        self.key = key


class AuthenticationError(ServerError):
    http_status = 401


class ModelNotFoundError(ServerError):
    http_status = 404
    code = "model_not_found"  # the OpenAI error code the fleet looks for (docs/fleet.md, neuron contract)


class ResponseNotFoundError(ServerError):
    """No stored response has ``response_id``: never stored, deleted, or past the store's retention."""

    http_status = 404

    def __init__(self, response_id: str) -> None:
        super().__init__(f"Response with id {response_id!r} not found.")
        self.response_id = response_id


class ModelBusyError(ServerError):
    http_status = 409


class InsufficientMemoryError(ServerError):
    http_status = 507


class ModelLoadFailedError(ServerError):
    http_status = 500


class OverloadedError(ServerError):
    """Refused by admission control; ``retry_after_s`` goes into the Retry-After header."""

    http_status = 503

    def __init__(self, message: str, *, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class QueueFullError(OverloadedError):
    http_status = 429


class QueueTimeoutError(OverloadedError):
    http_status = 503


class ShuttingDownError(OverloadedError):
    http_status = 503
