"""The shared model of sparkdock, used by the server and the notebook alike.

- :mod:`sparkdock.model.lifecycle`: job states, kinds, transitions and colours (seeds 000 and 004);
- :mod:`sparkdock.model.exit_codes`: the exit-code catalog (seed 000);
- :mod:`sparkdock.model.specs`: the pydantic models of the POST bodies.

It imports nothing else of sparkdock (``tests/test_layers.py``).
"""
