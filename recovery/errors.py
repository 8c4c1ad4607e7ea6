"""Domain errors. Each class carries its exit code; the message is one plain line for a person."""


class LifeboatError(Exception):
    """Base of every failure the CLI reports as one line (never a traceback)."""

    exit_code = 2

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class UsageError(LifeboatError):
    exit_code = 2


class DiskError(LifeboatError):
    """A disk or image cannot be opened, read or written."""

    exit_code = 3


class RefusedError(LifeboatError):
    """A safety rule refuses the operation (mounted, system disk, too small, ...)."""

    exit_code = 4


class RepositoryError(LifeboatError):
    """Missing, foreign or unsupported repository; unknown snapshot; locked."""

    exit_code = 5


class BusyError(RepositoryError):
    """Another process holds the repository's lock (a backup, or an operation deleting data)."""


class LockWaitError(BusyError):
    """Waited the time allowed for running backups to finish, and they had not."""

    exit_code = 12


class DamageError(LifeboatError):
    """Data in the repository fails its hash or is missing."""

    exit_code = 6


class NoSpaceError(LifeboatError):
    """The destination is full or too small for what must be written."""

    exit_code = 7


class ToolError(LifeboatError):
    """An external tool (sfdisk, resize2fs, ...) failed or is missing."""

    exit_code = 8


class NotFoundError(LifeboatError):
    """A partition or path asked for is not in the snapshot."""

    exit_code = 10


class WrongPassphraseError(LifeboatError):
    """The passphrase or recovery code opens none of an encrypted repository's keys."""

    exit_code = 11


class Cancelled(LifeboatError):
    exit_code = 130

    def __init__(self, message: str = "cancelled"):
        super().__init__(message)
