"""What a request may ask of this server: its files, its images and the size of its clusters.

The specs (:mod:`sparkdock.model.specs`) say what a request *is*; :class:`Limits` says what this server *allows*,
from the extension's settings (``allowed_images``, ``max_workers``, ``max_worker_cores``, ``max_worker_memory``
and the Jupyter server's ``root_dir``). A request beyond them is refused at submission with a
:class:`~sparkdock.model.specs.SpecError` of status 400 that names the field and the setting.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePath

from sparkdock.model.specs import ClusterSpec, SpecError, parse_size

#: Largest application file (``application.path``) that is staged, in bytes.
MAX_APP_FILE_BYTES = 50 * 1024**2


class PathRefused(ValueError):
    """A path that names no file under the root directory; the message says why."""


def resolve_under_root(raw: str, root: Path) -> Path:
    """The real path of ``raw`` (relative to ``root``, or absolute), if it lies under ``root``.

    ``..`` is refused outright, and the path is resolved (symlinks followed) before it is compared, so a
    symlink out of the root is refused too. Raises :class:`PathRefused`.
    """
    if not raw or "\x00" in raw:
        raise PathRefused("must be a non-empty file path")
    given = PurePath(raw)
    if ".." in given.parts:
        raise PathRefused("must not contain '..'")
    real_root = root.resolve()
    real = (real_root / given).resolve()  # an absolute `given` replaces the root
    if not real.is_relative_to(real_root):
        raise PathRefused(f"must name a file under the server's root directory {str(real_root)!r}")
    return real


@dataclass(frozen=True)
class Limits:
    """Bounds of what a request may ask (the extension fills them from its traitlets).

    Args:
        root_dir: ``application.path`` must name a file under it (the Jupyter server's ``root_dir``).
        allowed_images: images a cluster may name (an empty set: none, only the server's default image is used);
            ``None`` allows any (only for tests of the lifecycle; the extension always gives a set).
        max_workers: most workers of one cluster.
        max_worker_cores: most cores of one worker.
        max_worker_memory: most memory of one worker (a size like ``"8g"``).
    """

    root_dir: Path = field(default_factory=Path.cwd)
    allowed_images: frozenset[str] | None = None
    max_workers: int = 8
    max_worker_cores: int = 8
    max_worker_memory: str = "16g"

    @classmethod
    def of(cls, root_dir: Path | str, allowed_images: Iterable[str], max_workers: int, max_worker_cores: int,
           max_worker_memory: str) -> Limits:
        """Limits from settings; a bad ``max_worker_memory`` is a ``ValueError``."""
        parse_size(max_worker_memory)
        return cls(Path(root_dir), frozenset(allowed_images), max_workers, max_worker_cores, max_worker_memory)

    def check_cluster(self, cluster: ClusterSpec, prefix: str = "cluster") -> None:
        """Refuse (400) a cluster over a bound, or with an image not allowed; each error names the setting."""
        errors = []
        if cluster.workers > self.max_workers:
            errors.append((f"{prefix}.workers", f"at most {self.max_workers} workers (max_workers)"))
        if cluster.worker_cores > self.max_worker_cores:
            errors.append((f"{prefix}.worker_cores",
                           f"at most {self.max_worker_cores} cores per worker (max_worker_cores)"))
        if cluster.worker_memory_bytes > parse_size(self.max_worker_memory):
            errors.append((f"{prefix}.worker_memory",
                           f"at most {self.max_worker_memory} per worker (max_worker_memory)"))
        if cluster.image is not None and self.allowed_images is not None and cluster.image not in self.allowed_images:
            allowed = ", ".join(sorted(self.allowed_images)) or "none: the server's image only"
            errors.append((f"{prefix}.image", f"image {cluster.image!r} is not allowed (allowed_images: {allowed})"))
        if errors:
            raise SpecError([{"field": f, "message": m} for f, m in errors], status=400)

    def check_path(self, raw: str) -> None:
        """Refuse (400) an ``application.path`` that is not under the root directory."""
        try:
            resolve_under_root(raw, self.root_dir)
        except PathRefused as exc:
            raise SpecError([{"field": "application.path", "message": str(exc)}], status=400) from None

    def describe(self) -> str:
        """One line for the server's log."""
        images = "any" if self.allowed_images is None else ", ".join(sorted(self.allowed_images)) or "the default"
        return (f"limits: root {self.root_dir}, images {images}, at most {self.max_workers} workers of "
                f"{self.max_worker_cores} cores and {self.max_worker_memory}")
