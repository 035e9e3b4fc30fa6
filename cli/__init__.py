"""The ``distil`` command line: thin Typer commands over the library."""
