"""The built-in copy backends of folio-offload.

They are found through the ``offload.backends`` entry-point group (see pyproject.toml);
importing this package imports none of them, and never CuPy.
"""
