"""The root click group; command modules attach themselves to it.

Every command runs inside :func:`.options.error_handler` (applied here to the whole group, and by
:func:`.options.cli_errors` to each command): a user error is one line, Ctrl-C/SIGTERM exit 130, a bug
shows its traceback and says so.
"""

import click

from ..version import __version__
from .options import error_handler


class CGGPRGroup(click.Group):
    """A click group whose commands (and sub-groups) all run under the one error handler."""

    group_class = type  # sub-groups (``cggpr dataset``) are CGGPRGroups too

    def invoke(self, ctx):
        with error_handler():
            return super().invoke(ctx)


@click.group(cls=CGGPRGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="cggpr")
def main() -> None:
    """ase-cggpr: GPR on SOAP for ZIF energetics (atomistic or coarse-grained)."""
