"""bcrun: run a build whose number of parallel jobs follows the machine."""

__version__ = "0.1.0"
