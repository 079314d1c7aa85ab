"""The ``b2bkg`` command: a thin shell over the library.

Each verb lives in its own module (``b2bkg.cli.<verb>``) as a click command named ``command`` and
is imported only when used, so ``b2bkg --help`` stays fast. Library errors
(:class:`b2bkg.core.errors.B2bkgError`) and schema problems print as one line on stderr with exit
code 2; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys

import click

from b2bkg import __version__

# verb -> (module, one-line help)
VERBS: dict[str, tuple[str, str]] = {
    "simulate": ("b2bkg.cli.simulate", "Simulate truth background / events (pxd, ecl, smc)."),
    "train": ("b2bkg.cli.train", "Train a model on a data file into a run folder."),
    "generate": ("b2bkg.cli.generate", "Generate events from a trained run folder."),
    "evaluate": ("b2bkg.cli.evaluate", "Compare generated with truth: metrics.json + plots."),
    "overlay": ("b2bkg.cli.overlay", "Overlay background onto signal events."),
    "campaign": ("b2bkg.cli.campaign", "Sharded generation campaign on Dask."),
    "report": ("b2bkg.cli.report", "One self-contained HTML report from run/evaluation folders."),
    "filter": ("b2bkg.cli.filter", "Selective-MC filtering of generator-level events."),
    "validate": ("b2bkg.cli.validate", "Physics validation with no / true / generated background."),
    "reproduce": ("b2bkg.cli.reproduce", "Regenerate every README figure at its stated sample size."),
    "calibrate": ("b2bkg.cli.calibrate", "PXD truth simulator vs the Geant4 reference, side by side."),
    "storage": ("b2bkg.cli.storage", "What replacing overlay files costs and saves."),
    "export": ("b2bkg.cli.export", "Export a sampling network to ONNX."),
    "info": ("b2bkg.cli.info", "Summary of a b2bkg data file."),
    "convert": ("b2bkg.cli.convert", "Convert HDF5 <-> ROOT (by suffix)."),
    "merge": ("b2bkg.cli.merge", "Concatenate data files of one schema into one file."),
    "demo": ("b2bkg.cli.demo", "The main job end to end on the embedded default."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return [v for v, (mod, _) in VERBS.items() if importlib.util.find_spec(mod) is not None]

    def get_command(self, ctx, name):
        if name not in VERBS:
            return None
        mod, _ = VERBS[name]
        try:
            return importlib.import_module(mod).command
        except ModuleNotFoundError as e:
            if e.name == mod:
                raise click.UsageError(f"verb {name!r} is not available in this version of b2bkg") from None
            raise

    def format_commands(self, ctx, formatter):
        rows = [(v, VERBS[v][1]) for v in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="b2bkg")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@click.option("--debug", is_flag=True, help="Show tracebacks of errors.")
@click.pass_context
def cli(ctx, quiet, debug):
    """b2bkg: generative Belle II background (PXD, ECL) and selective MC."""
    from b2bkg.core.progress import set_quiet

    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
    if quiet:
        set_quiet(True)


def command_line() -> str:
    """The command line of this process (recorded in every output file)."""
    return " ".join(["b2bkg", *sys.argv[1:]])


def main(argv=None) -> None:
    debug = "--debug" in (argv if argv is not None else sys.argv[1:]) or os.environ.get("B2BKG_DEBUG")
    from b2bkg.core.errors import B2bkgError

    try:
        cli.main(args=argv, prog_name="b2bkg", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("b2bkg: aborted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except (B2bkgError, OSError) as e:
        if debug:
            raise
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        click.echo(f"b2bkg: error: {msg}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        click.echo("b2bkg: interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
