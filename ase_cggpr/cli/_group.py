"""The root click group; command modules attach themselves to it."""

import click

from .. import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="cggpr")
def main() -> None:
    """ase-cggpr: GPR on SOAP for ZIF energetics (atomistic or coarse-grained)."""
