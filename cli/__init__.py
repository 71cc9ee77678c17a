"""The ``vtr`` command line (Typer): parses options, calls vtr, prints. No logic of its own lives here."""
