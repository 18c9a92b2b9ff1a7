"""Logging modes, as in ``fastapi-ws-rpc``: pick one with :meth:`LoggingConfig.set_mode`
or the ``WS_RPC_LOGGING`` environment variable (``NO_LOGS``, ``UVICORN``, ``SIMPLE``,
``LOGURU``).

All loggers live under the ``fastwsrpc`` logger, so the standard ``logging``
configuration of an application can also override everything. With no
configuration at all (no handler on the root logger, no mode chosen) warnings
and errors still reach stderr, with their tracebacks: a method that crashes,
a client that cannot connect, must never pass in silence. Once the application
configures logging, that fallback steps aside. Readable logs are one line away:
``logging.basicConfig(level=logging.INFO, format="%(asctime)s
%(levelname)s %(name)s: %(message)s")``, or ``WS_RPC_LOGGING=UVICORN``. The per-message
path logs only behind ``isEnabledFor`` checks, so no string is built unless
debug logging is on.
"""

from __future__ import annotations

import logging
import os
import sys
from enum import Enum
from typing import Optional

ENV_VAR = "WS_RPC_LOGGING"
ROOT_LOGGER = "fastwsrpc"


class LoggingModes(Enum):
    """Where the library's logs go: nowhere, like uvicorn, to the root logger, or through loguru."""

    NO_LOGS = 0
    UVICORN = 1
    SIMPLE = 2
    LOGURU = 3


class _LoguruHandler(logging.Handler):
    """Forwards standard records to loguru, for applications that log through it."""

    def emit(self, record: logging.LogRecord) -> None:  # pragma: no cover - needs loguru
        from loguru import logger as loguru_logger

        loguru_logger.opt(depth=6, exception=record.exc_info).log(record.levelname, record.getMessage())


class LoggingConfig:
    def __init__(self) -> None:
        self._mode: Optional[LoggingModes] = None

    def get_mode(self) -> LoggingModes:
        if self._mode is None:
            name = os.environ.get(ENV_VAR, "SIMPLE").upper()
            self._mode = LoggingModes.__members__.get(name, LoggingModes.SIMPLE)
        return self._mode

    def set_mode(self, mode: LoggingModes = LoggingModes.SIMPLE, level: int = logging.INFO) -> None:
        """Route the library's logs: nowhere, like uvicorn, plainly, or through loguru."""
        self._mode = mode
        root = logging.getLogger(ROOT_LOGGER)
        for old in list(root.handlers):
            if getattr(old, "_fastwsrpc", False):
                root.removeHandler(old)
        handler: Optional[logging.Handler] = None
        if mode is LoggingModes.NO_LOGS:
            root.propagate = False
            root.setLevel(logging.CRITICAL + 1)
            return
        root.setLevel(level)
        if mode is LoggingModes.UVICORN:
            handler = logging.StreamHandler()
            try:
                from uvicorn.logging import DefaultFormatter

                handler.setFormatter(DefaultFormatter("%(levelprefix)s %(asctime)s %(message)s"))
            except ImportError:  # pragma: no cover - uvicorn is a dependency of the server side
                handler.setFormatter(logging.Formatter("%(levelname)s %(asctime)s %(message)s"))
            root.propagate = False
        elif mode is LoggingModes.LOGURU:
            handler = _LoguruHandler()
            root.propagate = False
        else:
            root.propagate = True
        if handler is not None:
            handler._fastwsrpc = True  # type: ignore[attr-defined]
            root.addHandler(handler)


logging_config = LoggingConfig()


class _Fallback(logging.StreamHandler):  # type: ignore[type-arg]
    """Our warnings and errors on stderr while the application has configured no logging at all.

    Python's own last resort would do that without level or source, and a
    ``NullHandler`` (the usual advice for libraries) hid the traceback of a
    crashing method on every server but the CLI's: uvicorn configures its
    own loggers, not the root one. This prints only while the root logger has
    no handler, so an application's configuration always wins.
    """

    def __init__(self) -> None:
        super().__init__()
        self.setLevel(logging.WARNING)
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        if not logging.getLogger().handlers and logging_config._mode in (None, LoggingModes.SIMPLE):
            self.stream = sys.stderr  # the stderr of now (tests and daemons replace it)
            super().emit(record)


logging.getLogger(ROOT_LOGGER).addHandler(_Fallback())


def get_logger(name: str) -> logging.Logger:
    """A logger under ``fastwsrpc``; the mode from ``WS_RPC_LOGGING`` is applied on first use."""
    if logging_config._mode is None and os.environ.get(ENV_VAR):
        logging_config.set_mode(logging_config.get_mode())
    return logging.getLogger(f"{ROOT_LOGGER}.{name}")
