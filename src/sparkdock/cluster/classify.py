"""Classify how a Spark driver ended into sparkdock exit codes.

:func:`classify_driver` is a pure function of the driver's exit status and its output (stdout and
stderr, or their tail). It returns a :class:`DriverOutcome`: the job exit code of the catalog and,
for application failures, the kernel exit code (1-7):

======  ======================================================================================
kernel  meaning (first match wins, in this order of precedence: 6, 3, 5, 4, 1, then 2/7)
======  ======================================================================================
1       configuration or assertion error (AssertionError, IllegalArgumentException, ValueError
        raised for a bad argument, invalid configuration)
2       generic command failure (a non-zero exit without a recognised error)
3       dataset missing (PATH_NOT_FOUND, TABLE_OR_VIEW_NOT_FOUND, FileNotFoundException...)
4       integrity check failed (an ``IntegrityError``/"integrity check failed" raised by the job)
5       declared output missing ("declared output missing"/``OutputMissingError``)
6       class or conf not found (ClassNotFoundException, NoClassDefFoundError, ModuleNotFoundError,
        a missing SQL/Spark config)
7       other (an exception that matches nothing above)
======  ======================================================================================

Job exit codes (the catalog's, see ``sparkdock.model.exit_codes``):

- ``0``: success (``exit_code`` is ``None``);
- ``18``: the application failed (executor error) with a kernel exit code;
- ``15``: the application never got resources ("Initial job has not accepted any resources", and no
  application error in the output: Spark prints that warning on a merely busy cluster too);
- ``16``: the cluster became unusable under the application: the driver ran out of memory
  (``java.lang.OutOfMemoryError``, Spark's own out-of-memory exit code 52), an executor did (it exits with
  Spark's code 52: "Command exited with code 52"), or the driver was killed from outside sparkdock (137,
  SIGKILL: the kernel's out-of-memory killer, or a kill by hand). Spark's 52 is never sparkdock's exit code 52
  (an interactive backend that cannot provision);
- ``29``: the driver's JVM ended abnormally (134 abort/core dump, 139 SIGSEGV, 143 SIGTERM, other signals).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "EXIT_APPLICATION_FAILED",
    "EXIT_JVM_ABNORMAL",
    "EXIT_NO_RESOURCES",
    "EXIT_OUT_OF_MEMORY",
    "KERNEL_CLASS_OR_CONF_NOT_FOUND",
    "KERNEL_CONFIG_ERROR",
    "KERNEL_DATASET_MISSING",
    "KERNEL_GENERIC_FAILURE",
    "KERNEL_INTEGRITY_FAILED",
    "KERNEL_OTHER",
    "KERNEL_OUTPUT_MISSING",
    "DriverOutcome",
    "classify_driver",
]

EXIT_APPLICATION_FAILED = 18
EXIT_NO_RESOURCES = 15
EXIT_OUT_OF_MEMORY = 16
EXIT_JVM_ABNORMAL = 29
#: Spark's own exit code of a JVM that died of an OutOfMemoryError (``SparkExitCode.OOM``).
SPARK_OOM_EXIT = 52

KERNEL_CONFIG_ERROR = 1
KERNEL_GENERIC_FAILURE = 2
KERNEL_DATASET_MISSING = 3
KERNEL_INTEGRITY_FAILED = 4
KERNEL_OUTPUT_MISSING = 5
KERNEL_CLASS_OR_CONF_NOT_FOUND = 6
KERNEL_OTHER = 7


@dataclass(frozen=True)
class DriverOutcome:
    """The classification of a driver's end.

    Attributes:
        exit_code: the job exit code (``None`` on success).
        kernel_exit_code: 1-7 for application failures (``exit_code`` 18), else ``None``.
        reason: a short human-readable reason, quoting the matched error when there is one.
    """

    exit_code: int | None
    kernel_exit_code: int | None
    reason: str


def _rx(*patterns: str) -> re.Pattern[str]:
    return re.compile("|".join(f"(?:{p})" for p in patterns), re.IGNORECASE)


_NO_RESOURCES = _rx(r"Initial job has not accepted any resources")
_OOM = _rx(r"java\.lang\.OutOfMemoryError", r"\bOutOfMemoryError\b", r"Java heap space",
           r"GC overhead limit exceeded", r"\bMemoryError\b")
#: An executor that died of an OutOfMemoryError exits with Spark's code 52 (SparkExitCode.OOM); the driver and
#: the worker report it with these words.
_EXECUTOR_OOM = _rx(r"exited with code 52\b", r"exitStatus 52\b", r"exit code: 52\b")
_KERNEL_RULES: tuple[tuple[int, re.Pattern[str]], ...] = (
    (KERNEL_CLASS_OR_CONF_NOT_FOUND, _rx(
        r"ClassNotFoundException", r"NoClassDefFoundError", r"\bModuleNotFoundError\b",
        r"Failed to find data source", r"DATA_SOURCE_NOT_FOUND", r"SQL_CONF_NOT_FOUND",
        r"CONFIG_NOT_AVAILABLE", r"NoSuchElementException: spark\.", r"Cannot load main class",
        r"Could not find or load main class")),
    (KERNEL_DATASET_MISSING, _rx(
        r"PATH_NOT_FOUND", r"TABLE_OR_VIEW_NOT_FOUND", r"SCHEMA_NOT_FOUND", r"NoSuchTableException",
        r"NoSuchDatabaseException", r"FileNotFoundException", r"\bFileNotFoundError\b",
        r"Path does not exist", r"Table or view not found")),
    (KERNEL_OUTPUT_MISSING, _rx(r"declared output missing", r"\bOutputMissingError\b",
                                r"output .* (?:is )?missing")),
    (KERNEL_INTEGRITY_FAILED, _rx(r"integrity check failed", r"\bIntegrityError\b",
                                  r"\bDataIntegrityError\b")),
    (KERNEL_CONFIG_ERROR, _rx(
        r"\bAssertionError\b", r"IllegalArgumentException", r"\bValueError\b",
        r"INVALID_CONF_VALUE", r"Invalid (?:configuration|argument)", r"SparkIllegalArgumentException")),
)
_EXCEPTION = re.compile(
    r"(?:^|\s)((?:[\w$]+\.)*[\w$]*(?:Exception|Error))\b(?::\s*(.*))?", re.MULTILINE)
_SIGNALS = {134: "SIGABRT (abort, core dump)", 137: "SIGKILL", 139: "SIGSEGV", 143: "SIGTERM"}


def _first_line(pattern: re.Pattern[str], text: str) -> str | None:
    m = pattern.search(text)
    if not m:
        return None
    start = text.rfind("\n", 0, m.start()) + 1
    end = text.find("\n", m.end())
    line = text[start:] if end < 0 else text[start:end]
    return line.strip()[:300]


def classify_driver(returncode: int | None, output: str = "") -> DriverOutcome:
    """Classify a driver's end from its exit status and its output.

    Args:
        returncode: the process's exit status as a shell shows it (``128 + n`` when killed by
            signal ``n``); a negative value (Python's ``Popen``: ``-n``) is converted the same way.
            ``None`` means the driver never ran (counted as a generic failure).
        output: the driver's stdout and stderr (the tail is enough).

    Returns:
        A :class:`DriverOutcome`. A zero exit status is a success, whatever the output says.
    """
    if returncode == 0:
        return DriverOutcome(None, None, "completed")
    code = None if returncode is None else (128 - returncode if returncode < 0 else returncode)

    no_resources = _first_line(_NO_RESOURCES, output)
    oom = _first_line(_OOM, output)
    if oom and (code in (137, 134) or code is None or "java.lang.OutOfMemoryError" in output
                or "MemoryError" in oom):
        return DriverOutcome(EXIT_OUT_OF_MEMORY, None, f"out of memory: {oom}")
    if code == SPARK_OOM_EXIT and "Traceback (most recent call last)" not in output:
        return DriverOutcome(EXIT_OUT_OF_MEMORY, None, "out of memory: the driver exited with Spark's "
                                                       "out-of-memory code 52")
    executor_oom = _first_line(_EXECUTOR_OOM, output)
    if executor_oom:
        return DriverOutcome(EXIT_OUT_OF_MEMORY, None, f"out of memory: an executor exited with Spark's "
                                                       f"out-of-memory code 52 ({executor_oom})")
    if code == 137:
        return DriverOutcome(EXIT_OUT_OF_MEMORY, None, "the driver was killed (137, SIGKILL) from outside "
                             "sparkdock: by the kernel's out-of-memory killer, or by hand")
    if code is not None and code > 128 and code - 128 in (6, 9, 11, 15):
        signal = _SIGNALS.get(code, f"signal {code - 128}")
        return DriverOutcome(EXIT_JVM_ABNORMAL, None, f"the driver's JVM ended abnormally ({code}, {signal})")
    # An application error wins over the "no resources" warning: Spark also prints that warning while a busy
    # cluster's cores are taken by other applications, so it only explains an exit that shows no other cause.
    for kernel_code, pattern in _KERNEL_RULES:
        line = _first_line(pattern, output)
        if line:
            return DriverOutcome(EXIT_APPLICATION_FAILED, kernel_code, line)
    exc = _first_line(_EXCEPTION, output)
    if exc:
        return DriverOutcome(EXIT_APPLICATION_FAILED, KERNEL_OTHER, exc)
    if no_resources:
        return DriverOutcome(EXIT_NO_RESOURCES, None, f"no resources: {no_resources}")
    return DriverOutcome(EXIT_APPLICATION_FAILED, KERNEL_GENERIC_FAILURE,
                         f"the driver exited with status {returncode}")
