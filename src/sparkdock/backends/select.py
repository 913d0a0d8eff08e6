"""Choosing a backend: ``auto`` uses Docker when an engine answers and the image is there, else local."""

from __future__ import annotations


def docker_usable(image: str, docker_host: str | None = None, timeout: float = 5.0) -> tuple[bool, str]:
    """Whether the Docker backend can run ``image`` now, and why (or why not)."""
    try:
        import docker
    except ImportError:  # pragma: no cover - docker is a dependency
        return False, "the docker Python package is not installed"
    try:
        client = docker.DockerClient(base_url=docker_host, timeout=timeout) if docker_host else \
            docker.from_env(timeout=timeout)
    except Exception as exc:
        return False, f"no Docker engine answers ({exc.__class__.__name__}); using local processes"
    try:
        client.ping()
    except Exception as exc:
        return False, f"the Docker engine does not answer ({exc.__class__.__name__}); using local processes"
    try:
        client.images.get(image)
    except Exception:
        return False, f"the Docker engine answers but image {image} is not built; using local processes"
    finally:
        client.close()
    return True, f"the Docker engine answers and image {image} is present"
