"""What runs inside a sparkdock cluster.

- :mod:`sparkdock.cluster.roles`: command lines and Spark conf of each role (master, worker, sql, lab,
  driver), shared by the image's entrypoint and the local backend;
- :mod:`sparkdock.cluster.entrypoint`: the image's entry point;
- :mod:`sparkdock.cluster.probes`: protocol-level readiness probes of the endpoints;
- :mod:`sparkdock.cluster.classify`: classification of a driver's failure into exit codes;
- :mod:`sparkdock.cluster.sql_runner`: runs a SQL script statement by statement;
- :mod:`sparkdock.cluster.py_runner`: runs every application for ``spark-submit``, so that its last output
  is not lost.

This package depends on the standard library only (``probes.probe_sql`` imports impyla when called),
so that it can be imported inside the image without sparkdock's other dependencies.
"""

PYSPARK_VERSION = "4.3.0"
"""The pyspark version the image ships and the roles are written for."""
