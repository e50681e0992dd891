"""The exceptions bcrun raises: one base class, one subclass per layer.

The command line turns any of them into one ``bcrun: ...`` line and exit
status 125, the status nice(1) and env(1) use for their own failures.
"""


class BcrunError(Exception):
    """Base class of every error bcrun reports to its user."""


class ProtocolError(BcrunError):
    """A peer broke the build-control protocol (bad line, bad token)."""


class LaunchError(BcrunError):
    """The build command could not be started."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class MetricsError(BcrunError):
    """The system metrics a policy needs could not be read."""


class ControlError(BcrunError):
    """A running bcrun could not be found, reached or controlled."""


class RuntimeDirError(BcrunError):
    """The private runtime directory is missing, unsafe or unusable."""


class ConfigError(BcrunError):
    """A setting is malformed or out of range."""
