"""The exit-code catalog (seed 000), mapped to what can really happen in sparkdock.

The seed was written for a platform built on Azure Batch, aztk clusters, WDL and DRS. Each code here keeps
its number, kind and state, and says in this project's own words what its honest equivalent is: the Docker
engine or the local launcher instead of Azure Batch, the sparkdock image instead of a TRS tool image, the
Spark application instead of a WDL task, input paths/tables instead of DRS objects. Codes that have no
equivalent stay in the catalog with ``produced=False`` and the reason.

Only ``CANCELED`` (14, 15), ``EXECUTOR_ERROR`` (18) and ``SYSTEM_ERROR`` (the rest) carry a code.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from sparkdock.model.lifecycle import Kind, State

A, INT = Kind.AUTOMATED, Kind.INTERACTIVE


@dataclass(frozen=True)
class ExitCode:
    """One entry of the catalog."""

    code: int
    kinds: tuple[Kind, ...]
    state: State
    category: str
    description: str
    action: str
    message: str
    """Message template (``str.format`` fields are filled by :meth:`format`)."""
    seed_message: str
    produced: bool = True
    not_produced_reason: str | None = None

    def format(self, **fields: object) -> str:
        """The message with its fields filled; unknown fields are left as they are."""
        try:
            return self.message.format_map(_Defaults(fields))
        except (ValueError, IndexError):
            return self.message

    def to_json(self) -> dict[str, object]:
        """JSON form, as served by ``GET sparkdock/api/exit-codes``."""
        d = asdict(self)
        d["kinds"] = [k.value for k in self.kinds]
        d["state"] = self.state.value
        return d


class _Defaults(dict):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


@dataclass(frozen=True)
class KernelExitCode:
    """A kernel exit code (1–7) that qualifies exit code 18."""

    code: int
    description: str
    action: str
    examples: tuple[str, ...] = field(default_factory=tuple)

    def to_json(self) -> dict[str, object]:
        """JSON form."""
        d = asdict(self)
        d["examples"] = list(self.examples)
        return d


_NP = False  # "not produced" marker for readability

_ENTRIES: list[ExitCode] = [
    # ---- automated: CANCELED -------------------------------------------------------------------------
    ExitCode(
        14, (A,), State.CANCELED, "canceled",
        "The job was canceled by the user.",
        "Start a new job, with a different configuration if that was the reason.",
        "Job has been aborted by user.",
        "Job has been aborted by user.",
    ),
    ExitCode(
        15, (A,), State.CANCELED, "canceled",
        "The job was canceled automatically to avoid unexpected consumption: it asked for more than its "
        "cluster can ever give (Spark would wait forever), or it ran past max_runtime with "
        "overrun_action=cancel.",
        "Submit again with a larger cluster (more workers, worker_cores or worker_memory), smaller "
        "spark.executor.* requests, or a larger max_runtime.",
        "To avoid unexpected consumption, the job has been automatically aborted: {reason}",
        "To avoid unexpected backend consumption, job has been automatically aborted. "
        "Please adjust larger wm_size.",
    ),
    # ---- automated: EXECUTOR_ERROR -------------------------------------------------------------------
    ExitCode(
        18, (A,), State.EXECUTOR_ERROR, "executor",
        "The Spark application failed; the kernel exit code says how (see the kernel exit codes).",
        "Read the driver log (logs?component=driver) and the kernel exit code's action.",
        "Task fails with kernel exit code: {kernel_exit_code}",
        "Task fails with kernel exit code: 1",
    ),
    # ---- automated: SYSTEM_ERROR ---------------------------------------------------------------------
    ExitCode(
        9, (A,), State.SYSTEM_ERROR, "system",
        "The image's digest does not match the digest registered for it.",
        "Check the image reference and its digest.",
        "Integrity check of the image failed.",
        "Integrity check of docker images fails.",
        produced=_NP,
        not_produced_reason="sparkdock keeps no registry of image digests: images are built or "
        "referenced locally, so there is nothing to compare against.",
    ),
    ExitCode(
        10, (A,), State.SYSTEM_ERROR, "system",
        "An output could not be added at the workflow level.",
        "Report it to the sparkdock maintainers.",
        "Failed to add outputs: {detail}",
        "Failed to add outer fqns: MainWDL.SubWorkflow.Task",
        produced=_NP,
        not_produced_reason="sparkdock runs single Spark applications, not workflows with fully "
        "qualified outputs.",
    ),
    ExitCode(
        11, (A,), State.SYSTEM_ERROR, "system",
        "The application's inputs are invalid: its file path does not exist or is not readable, or "
        "its arguments or conf are rejected before the driver starts.",
        "Fix the application path, args or conf named in the message.",
        "Invalid inputs for the application: {detail}",
        "Required workflow input 'RNAseq.refTptAnnotateGtf' not specified.",
    ),
    ExitCode(
        12, (A,), State.SYSTEM_ERROR, "system",
        "The application could not be staged while initializing: its code does not parse (Python "
        "syntax error, empty SQL script) or could not be written for the driver.",
        "Fix the code shown in the message and submit again.",
        "Failed to stage the application: {detail}",
        "Failed to materialize: xxx",
    ),
    ExitCode(
        13, (A,), State.SYSTEM_ERROR, "system",
        "The outputs of the job could not be registered.",
        "Check the job name for special characters.",
        "Unsuccessful registration of outputs.",
        "Unsuccessful registration of DRS object.",
        produced=_NP,
        not_produced_reason="sparkdock does not register outputs in a data repository; the application "
        "writes its outputs itself (a failure there is exit code 18).",
    ),
    ExitCode(
        16, (A,), State.SYSTEM_ERROR, "system",
        "The cluster became unusable while the application ran: a container or process ran out of "
        "memory or disk, or was killed by the kernel.",
        "Give the cluster more worker_memory, or free disk, and run again.",
        "Cluster became unusable: {detail}",
        "Cluster becomes unusable due to reasons such as running out of disk.",
    ),
    ExitCode(
        17, (A,), State.SYSTEM_ERROR, "system",
        "Spark itself refused the submission (spark-submit reported an error before the application ran, "
        "such as an unknown master or deploy option).",
        "Read the message and the driver log; correct the conf or args.",
        "Spark refused the submission: {detail}",
        "java.lang.IllegalArgumentException: Docker image has an invalid syntax.",
    ),
    ExitCode(
        20, (A,), State.SYSTEM_ERROR, "system",
        "The job's cluster could not be provisioned (image, containers, processes or workers did not "
        "come up).",
        "Check the image and the backend; the history holds the last log lines.",
        "The cluster could not be provisioned: {detail}",
        "All nodes of pool test-xnwnlakckme become starttaskfailed/unusable. Shutdown cluster!",
    ),
    ExitCode(
        21, (A,), State.SYSTEM_ERROR, "system",
        "The cluster's master failed to start or became unusable.",
        "Check the image and the master log (logs?component=master).",
        "The master of the cluster became unusable: {detail}",
        "Master of pool test-xnwnlakckme becomes starttaskfailed/unusable. Shutdown cluster!",
    ),
    ExitCode(
        22, (A,), State.SYSTEM_ERROR, "system",
        "The backend service could not be provisioned at the account level.",
        "Check the workspace set-up.",
        "The backend could not be provisioned.",
        "To be added.",
        produced=_NP,
        not_produced_reason="there is no account-level backend: an unreachable Docker engine or "
        "launcher is reported per cluster (20 for automated jobs, 52 for interactive ones).",
    ),
    ExitCode(
        23, (A,), State.SYSTEM_ERROR, "system",
        "The queue is full: too many jobs are waiting for capacity (max_queued_jobs).",
        "Wait for running jobs to end, or raise SparkDock.max_queued_jobs / max_running_clusters.",
        "Job quota reached: {detail}",
        "Active job and job schedule quota for the account has been reached.",
    ),
    ExitCode(
        24, (A,), State.SYSTEM_ERROR, "system",
        "The job failed to start after every retry of its policy (seed 003 'Start Failed').",
        "Read the history for each attempt's error; fix the cause or raise policy.retries.",
        "Retries exhausted after {attempts} attempts: {detail}",
        "To be added.",
    ),
    ExitCode(
        25, (A,), State.SYSTEM_ERROR, "system",
        "The run request's file bundle could not be produced.",
        "Adjust the inputs named in the message.",
        "Could not bundle the run's files: {detail}",
        "detail:drs object with label test/SomaticAnalysis/inFileFqsTumor/1/2 not found,"
        "code:internal_server_error",
        produced=_NP,
        not_produced_reason="applications are staged as a single file; there is no bundle API.",
    ),
    ExitCode(
        26, (A,), State.SYSTEM_ERROR, "system",
        "The backend retried a task on its own during a recovery operation.",
        "Resubmit the job.",
        "Unexpected retry.",
        "Unexpected retry.",
        produced=_NP,
        not_produced_reason="neither Docker nor the local launcher retries a driver on its own; "
        "sparkdock's own retries are visible in the history and end in 24.",
    ),
    ExitCode(
        27, (A,), State.SYSTEM_ERROR, "system",
        "The cluster disappeared while the job ran (containers or processes removed or killed from "
        "outside, or the interactive cluster it ran on was terminated).",
        "Resubmit the job; check what removed the cluster.",
        "Cluster disappeared unexpectedly: {detail}",
        "Cluster disappears unexpectedly.",
    ),
    ExitCode(
        28, (A,), State.SYSTEM_ERROR, "system",
        "A downloaded archive could not be decompressed.",
        "Resubmit the job.",
        "Unable to unpack the run's files.",
        "Unable to unzip run_id.zip file.",
        produced=_NP,
        not_produced_reason="sparkdock stages plain files; nothing is zipped or unzipped.",
    ),
    ExitCode(
        29, (A,), State.SYSTEM_ERROR, "system",
        "The driver JVM ended with an abnormal exit code (a crash of the Java runtime, a signal).",
        "Read the driver log; a JVM crash (134) often means native memory trouble.",
        "The driver terminated abnormally: {detail}",
        "WE2 is terminated with exit code 134.",
    ),
    # ---- interactive: SYSTEM_ERROR -------------------------------------------------------------------
    ExitCode(
        50, (INT,), State.SYSTEM_ERROR, "system",
        "The SQL endpoint (Spark Thrift Server) or the lab endpoint (JupyterLab) did not start: it was "
        "not ready within its timeout, or its container or process exited; or stopped while running: the "
        "cluster's master or SQL endpoint stayed down past the health grace period (health_grace).",
        "Read the sql, lab or master log in the history; raise the start-up timeout on a slow machine; launch "
        "a new cluster if it stopped while running.",
        "The {endpoint} endpoint did not start, or stopped while running: {detail}",
        "Unable to initiate lab and sql endpoint.",
    ),
    ExitCode(
        51, (INT,), State.SYSTEM_ERROR, "system",
        "The image or a container could not be provisioned: the image is missing or cannot be built, a "
        "container cannot be created or started, or (local backend) Java or pyspark is missing or broken.",
        "Check the image name (or build it with scripts/build-image.sh), or JAVA_HOME and pyspark.",
        "Unable to provision the cluster: {detail}",
        "Unable to provision clusters.",
    ),
    ExitCode(
        52, (INT,), State.SYSTEM_ERROR, "system",
        "The backend itself could not provision: the Docker engine is unreachable or refusing (socket "
        "missing, daemon down, out of disk), or the local launcher cannot start processes.",
        "Start the Docker engine (scripts/docker-engine.sh) or free the resource named in the message.",
        "The backend is unable to provision: {detail}",
        "Unable to provision clusters.",
    ),
]

#: The catalog: code → entry.
CATALOG: dict[int, ExitCode] = {e.code: e for e in _ENTRIES}

#: Kernel exit codes (qualify exit code 18).
KERNEL_EXIT_CODES: dict[int, KernelExitCode] = {
    k.code: k
    for k in [
        KernelExitCode(
            1, "Configuration or assertion error in the application.",
            "Review the application's conf and assertions named in the message.",
            ("AssertionError", "IllegalArgumentException", "ValueError"),
        ),
        KernelExitCode(
            2, "The command failed (the application exited with a non-zero status).",
            "Check stdout, stderr and the driver log of the job.",
            ("sys.exit(3)", "Exception"),
        ),
        KernelExitCode(
            3, "Dataset error: an input path or table does not exist or cannot be read.",
            "Check the input paths and table names.",
            ("PATH_NOT_FOUND", "TABLE_OR_VIEW_NOT_FOUND", "FileNotFoundException"),
        ),
        KernelExitCode(
            4, "Dataset integrity check failed (checksum, row count or schema mismatch).",
            "Check the input data; the message names the failed check.",
            ("IntegrityError", "checksum mismatch", "SparkdockIntegrityError"),
        ),
        KernelExitCode(
            5, "A declared output is missing after the application ran.",
            "Make sure the application writes every output it declares.",
            ("Missing output", "SparkdockMissingOutput"),
        ),
        KernelExitCode(
            6, "Operator or configuration error: a class, data source or conf was not found.",
            "Check spark.jars/packages and the class or data source names.",
            ("ClassNotFoundException", "DATA_SOURCE_NOT_FOUND", "ModuleNotFoundError"),
        ),
        KernelExitCode(
            7, "Other application error.",
            "Read the driver log; report it if it looks like a sparkdock bug.",
            (),
        ),
    ]
}

SEED_CODES: frozenset[int] = frozenset({9, 10, 11, 12, 13, 14, 15, 16, 17, 18, *range(20, 30), 50, 51, 52})


def get(code: int) -> ExitCode:
    """The catalog entry for ``code``; raises ``KeyError`` for an unknown code."""
    return CATALOG[code]


def message(code: int, **fields: object) -> str:
    """The message of ``code`` with ``fields`` filled in."""
    return CATALOG[code].format(**fields)


def codes_for(state: State | str, kind: Kind | str) -> frozenset[int]:
    """The codes that go with ``state`` for jobs of ``kind``."""
    st, kd = State(state), Kind(kind)
    return frozenset(e.code for e in _ENTRIES if e.state == st and kd in e.kinds)


def catalog_json() -> dict[str, object]:
    """The whole catalog as JSON, as served by ``GET sparkdock/api/exit-codes``."""
    return {
        "exit_codes": [e.to_json() for e in _ENTRIES],
        "kernel_exit_codes": [k.to_json() for k in KERNEL_EXIT_CODES.values()],
    }
