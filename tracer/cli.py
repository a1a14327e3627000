"""What the packages that add a ``flightrec`` command group share: the options every command
spells the same way, the exit status of an error, and the hints printed after a command.

A package adds its group under the ``flightrec.commands`` entry-point group and builds it with
these::

    import click
    from tracer.cli import db_option, json_option

    @click.command("mine")
    @db_option
    @json_option
    def mine(db: str | None, as_json: bool) -> None:
        \"\"\"One line of help.\"\"\"

A ``tracer.FlightrecError`` raised by a command is printed as one line and exits ``EXIT_ERROR``.
"""

from ._cli import (
    DURATION,
    EXIT_ERROR,
    actor_option,
    check_port_free,
    command_name,
    db_option,
    hint,
    json_option,
    output_width,
    serve_port_options,
)

__all__ = [
    "DURATION",
    "EXIT_ERROR",
    "actor_option",
    "check_port_free",
    "command_name",
    "db_option",
    "hint",
    "json_option",
    "output_width",
    "serve_port_options",
]
