"""The one exception tree of reka-sync.

Every boundary (config file, SQLite, HTTP, filesystem) maps foreign
exceptions into this tree, with a message that says what to do next::

    RekaSyncError
    ├── ConfigError            the configuration cannot be used (exit 78)
    ├── GlobError              a glob is malformed (the config reports it with its key path)
    ├── UsageError             the command line names something it cannot act on (exit 2)
    ├── JournalError           the SQLite journal cannot be opened or written (exit 74)
    │   ├── NoJournalYet           nothing has created it yet (exit 1)
    │   └── LeaseLost              another process took the job over; our result is dropped
    ├── IllegalTransition      a job state change the lifecycle forbids (a bug)
    ├── FileProblem            a local file is unreadable, vanished or changing
    │   ├── FileVanished
    │   ├── FileChanged
    │   ├── FileOutside            a folder on its path became a link: never read
    │   └── FileUnreadable         an I/O error while reading it
    └── ApiError               anything the Reka API or the network said
        ├── Paused             held back before sending: that kind of request is paused
        ├── ApiStatusError     the server answered with an error status
        │   ├── AuthError          401 / 403: pause everything, alert the operator
        │   ├── NotFound           404
        │   ├── ValidationFailed   400 / 413 / 422 and other 4xx: permanent for this request
        │   ├── Conflict           409
        │   ├── RateLimited        429, with retry_after and reset
        │   └── ServerError        5xx: retry with backoff
        └── TransportError     no usable answer
            ├── NotSent            the request never reached the server: safe to retry
            ├── BadReply           an answer that is not the documented JSON (idempotent
            │                      requests: retry; an upload's becomes OutcomeUnknown)
            ├── OutcomeUnknown     the body was sent, no usable answer: reconcile first
            └── Cancelled          we stopped the request ourselves

What each of these does to a job is decided in one place: ``outcomes.classify``.
"""

from __future__ import annotations

# Exit codes (sysexits where one fits): what a one-shot command or the service ends with.
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
EXIT_IOERR = 74  # the journal cannot be read or written (disk full, read-only, damaged)
EXIT_NOPERM = 77  # run as a user that may not write the journal (pause as root)
EXIT_TEMPFAIL = 75  # the API stayed unreachable past --max-wait: run again later
EXIT_CONFIG = 78  # a configuration error, including a key the API refuses


class RekaSyncError(Exception):
    """Base of every error reka-sync raises on purpose."""


class ConfigError(RekaSyncError):
    """Given every problem of a configuration, carry them all at once."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class GlobError(RekaSyncError):
    """A glob pattern is empty or malformed."""


class UsageError(RekaSyncError):
    """The command line named something it cannot act on."""


class WrongUser(RekaSyncError):
    """The command must run as the user that owns the journal (the service's)."""


class JournalError(RekaSyncError):
    """The journal file cannot be used as asked."""


class NoJournalYet(JournalError):
    """No journal at the configured path yet: nothing has run (not an I/O error)."""


class LeaseLost(JournalError):
    """Another process took this job over after our lease expired; our result is dropped."""


class IllegalTransition(RekaSyncError):
    """A job was asked to make a move its lifecycle forbids."""

    def __init__(self, state: str, event: str) -> None:
        self.state = state
        self.event = event
        super().__init__(f"event {event!r} is not allowed in state {state!r}")


class FileProblem(RekaSyncError):
    """A local file cannot be read as it is."""


class FileVanished(FileProblem):
    """The file disappeared before or during its upload."""


class FileChanged(FileProblem):
    """The file changed while it was read; it goes back to settling."""


class FileOutside(FileProblem):
    """The path leads out of the roots through a link: it is never read."""


class FileUnreadable(FileProblem):
    """Reading the file failed (an I/O error, permissions, a share that went away)."""


class ApiError(RekaSyncError):
    """Anything the Reka API or the network between us said."""

    request_id: str | None = None


class Paused(ApiError):
    """A request was held back because its kind is paused; nothing was sent."""

    def __init__(self, message: str, *, seconds: float) -> None:
        self.seconds = seconds
        super().__init__(message)


class ApiStatusError(ApiError):
    """The server answered with an error status."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        error_type: str | None = None,
        param: str | None = None,
        request_id: str | None = None,
        retry_after: float | None = None,
        reset_after: float | None = None,
    ) -> None:
        self.status = status
        self.message = message
        self.error_type = error_type
        self.param = param
        self.request_id = request_id
        self.retry_after = retry_after
        self.reset_after = reset_after
        suffix = f" (request id {request_id})" if request_id else ""
        super().__init__(f"HTTP {status}: {message}{suffix}")


class AuthError(ApiStatusError):
    """The API key was refused; nothing will work until it is fixed."""


class NotFound(ApiStatusError):
    """The video or group does not exist (or no longer exists)."""


class ValidationFailed(ApiStatusError):
    """The request was refused as it is; sending it again will not help."""


class Conflict(ApiStatusError):
    """The thing we tried to create exists already."""


class RateLimited(ApiStatusError):
    """Too many requests; wait for retry_after or reset_after seconds."""


class ServerError(ApiStatusError):
    """The server failed; try again later."""


class TransportError(ApiError):
    """No usable answer came back."""


class NotSent(TransportError):
    """The request never reached the server; it is safe to send again. `unreachable`: no
    connection could be made (refused, DNS, TLS, connect timeout): the API is not there."""

    def __init__(self, message: str, *, unreachable: bool = False) -> None:
        self.unreachable = unreachable
        super().__init__(message)


class BadReply(TransportError):
    """The server answered, but not with the documented JSON (a proxy's page, a cut body)."""


class OutcomeUnknown(TransportError):
    """The request was sent but no answer came; the server may have acted on it."""


class Cancelled(TransportError):
    """We stopped the request ourselves (shutdown, stall, or a changing file)."""

    def __init__(self, message: str, *, body_complete: bool = False) -> None:
        self.body_complete = body_complete
        super().__init__(message)
