"""What runs inside a sparkdock cluster.

- :mod:`sparkdock.spark.roles`: command lines and Spark conf of each role (master, worker, sql, lab,
  driver), shared by the image's entrypoint and the local backend;
- :mod:`sparkdock.spark.entrypoint`: the image's entry point;
- :mod:`sparkdock.spark.probes`: protocol-level readiness probes of the endpoints;
- :mod:`sparkdock.spark.classify`: classification of a driver's failure into exit codes;
- :mod:`sparkdock.spark.sql_runner`: runs a SQL script statement by statement.

This package depends on the standard library only (``probes.probe_sql`` imports impyla when called),
so that it can be imported inside the image without sparkdock's other dependencies.
"""

PYSPARK_VERSION = "4.3.0"
"""The pyspark version the image ships and the roles are written for."""
