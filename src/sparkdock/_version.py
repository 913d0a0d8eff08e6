"""The version of sparkdock (a leaf module: it imports nothing, so every layer may read it).

``pyproject.toml`` carries the same string; ``tests/test_install.py`` keeps the two equal.
"""

__version__ = "0.1.0"
