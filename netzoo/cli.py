"""netzoo's command line: thin click commands, one library call each.

Anything a command does is also one Python call (named in each command's body), as in sqlite-utils.
A NetzooError is printed as one line, without a traceback, and exits with status 2; so is an OS-level fault
(a full disk, a read-only folder, a missing permission), which names the file and the fix.
"""

from __future__ import annotations

import errno
import os
import sys
from pathlib import Path

import click

from netzoo.errors import NetzooError

PATH = click.Path(path_type=Path)


def _ints(text: str | None, option: str = "--seeds") -> list[int] | None:
    """'0,1,2' -> [0, 1, 2]; None stays None; NetzooError for text holding no integer (e.g. '' or ',')."""
    if text is None:
        return None
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise NetzooError(f"{option} {text!r}: expected comma-separated integers like 0,1,2.") from None
    if not values:
        raise NetzooError(f"{option} {text!r} names no integer: pass comma-separated integers like 0,1,2, or leave "
                          f"{option} out.")
    return values


def _train_job(zoo, dataset, results, data_root=None, download=False, epochs=None, networks=None, seeds=None,
               shard=None, workers=None, device=None, recipe=None, **options):
    """The TrainJob the train options ask for: --seeds, --shard, --device, --recipe and --epochs resolved from
    their text (other options, e.g. executor, lenses, quiet, are the job's fields as they are)."""
    from netzoo.devices import parse_devices
    from netzoo.jobs import TrainJob
    from netzoo.recipe import load_recipe
    from netzoo.shards import parse_shard

    resolved = load_recipe(recipe)
    if epochs is not None:
        resolved = resolved.replace(epochs=epochs)
    return TrainJob(zoo=zoo, results=results, dataset=dataset, data_root=data_root, download=download,
                    recipe=resolved, seeds=_ints(seeds) or (42,), networks=networks, shard=parse_shard(shard),
                    workers=workers, devices=parse_devices(device), **options)


def _shape(text: str | None) -> tuple[int, int, int] | None:
    """'1x28x28' -> (1, 28, 28)."""
    if text is None:
        return None
    parts = text.lower().split("x")
    if len(parts) != 3 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise click.BadParameter(f"expected CxHxW like 1x28x28, got {text!r}")
    return tuple(int(p) for p in parts)  # type: ignore[return-value]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="netzoo")
def cli() -> None:
    """netzoo: generate a zoo of ~1000 networks, train every one, and answer questions about the population.

    Example:

        netzoo generate --dataset digits && netzoo train --zoo zoo/digits --dataset digits --results results/digits
    """


# --- zoo ---------------------------------------------------------------------------------------
@cli.command()
@click.option("--spec", default="default", show_default=True, help="default, square, variance, or a PATH.toml")
@click.option("--dataset", default=None, help="digits (1x8x8), mnist, fashion-mnist, kmnist (1x28x28); default digits")
@click.option("--input-shape", default=None, help="CxHxW instead of --dataset, e.g. 3x32x32")
@click.option("--classes", type=int, default=None, help="number of classes, with --input-shape (default 10)")
@click.option("--seed", type=int, default=None, help="generation seed (default: the spec's)")
@click.option("--out", type=PATH, default=None, help="output folder (default zoo/<dataset or shape>)")
@click.option("--dropout", type=float, default=None,
              help="Dropout(p) after every activation of every network, p in [0, 1) (default: the spec's)")
@click.option("--batch-norm/--no-batch-norm", default=None,
              help="BatchNorm after every hidden weight layer, or none (default: the spec's)")
@click.option("--quiet", is_flag=True, help="no progress bar")
def generate(spec, dataset, input_shape, classes, seed, out, dropout, batch_norm, quiet) -> None:
    """Render every network of a spec into DIR/<Name>.py and DIR/manifest.parquet.

    Example:

        netzoo generate --dataset mnist --out zoo/mnist
        netzoo generate --dataset digits --dropout 0.2 --batch-norm --out zoo/digits-bn-dropout
    """
    from netzoo.generate import generate_zoo

    if dataset and input_shape:
        raise click.UsageError("--dataset cannot be used with --input-shape: give one of them")
    if classes is not None and not input_shape:
        raise click.UsageError("--classes goes with --input-shape (a dataset knows its classes)")
    manifest = generate_zoo(spec=spec, dataset=dataset, input_shape=_shape(input_shape), classes=classes,
                            seed=seed, out=out, progress=not quiet, dropout=dropout, batch_norm=batch_norm)
    click.echo(f"{len(manifest)} networks -> {manifest.attrs['zoo_dir']}/ (manifest.parquet)")


@cli.group()
def zoo() -> None:
    """Look inside a generated zoo."""


@zoo.command("list")
@click.argument("pattern", default="*")
@click.option("--zoo", "zoo_dir", type=PATH, default=Path("zoo/digits"), show_default=True)
def zoo_list(pattern, zoo_dir) -> None:
    """List networks matching PATTERN (shell wildcards): name, family, activation, depth, params, memory, ops.

    Example:

        netzoo zoo list 'Conv2d*' --zoo zoo/digits
    """
    from netzoo.zoo import list_networks

    frame = list_networks(zoo_dir, pattern)
    cols = ["network", "family", "activation", "depth", "params", "memory", "ops", "macs"]
    click.echo(frame[cols].to_string(index=False))
    click.echo(f"{len(frame)} networks")


@zoo.command("show")
@click.argument("name")
@click.option("--zoo", "zoo_dir", type=PATH, default=Path("zoo/digits"), show_default=True)
def zoo_show(name, zoo_dir) -> None:
    """Show one network's costs and its source file.

    Example:

        netzoo zoo show ResNetStyleReLU_17 --zoo zoo/digits
    """
    from netzoo.zoo import describe_network

    click.echo(describe_network(zoo_dir, name))


# --- training ------------------------------------------------------------------------------------
@cli.command()
@click.option("--zoo", "zoo_dir", type=PATH, required=True, help="a folder written by netzoo generate")
@click.option("--dataset", required=True, help="digits, mnist, fashion-mnist or kmnist")
@click.option("--data-root", type=PATH, default=None, help="folder holding torchvision's dataset folders")
@click.option("--download", is_flag=True, help="download the dataset if missing (needs internet)")
@click.option("--results", type=PATH, required=True, help="results folder (networks/, epochs/, predictions/, layers/)")
@click.option("--epochs", type=int, default=None, help="epochs (default: the recipe's, 4)")
@click.option("--networks", default=None, help="only these names: GLOB[,GLOB…] with shell wildcards")
@click.option("--seeds", default=None, help="training seeds S[,S…] (default 42); each network trains once per seed")
@click.option("--shard", default=None,
              help="i/N: start with this share (1-based i), then help with the rest; 'auto' under a Slurm array")
@click.option("--workers", type=int, default=None, help="worker processes (default: one per device, or as the CPU allows)")
@click.option("--device", default=None, help="cpu, cuda, or cuda:0,cuda:1,… (default: cuda if present)")
@click.option("--recipe", "recipe_ref", default=None, help="a recipe name or PATH.toml (default: the study's)")
@click.option("--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True)
@click.option("--address", default=None, help="Ray cluster address (with --executor ray), e.g. auto")
@click.option("--gpus-per-task", type=float, default=None, help="Ray: GPU share per task, e.g. 0.25 packs four per GPU")
@click.option("--no-lenses", is_flag=True, help="do not record per-layer activation and gradient statistics")
@click.option("--save-weights", type=click.Choice(["last", "every", "none"]), default="last", show_default=True,
              help="keep each run's state dict (safetensors, RESULTS/weights/) after its last epoch, every epoch, or none")
@click.option("--weights-dtype", type=click.Choice(["float32", "float16"]), default="float32", show_default=True,
              help="dtype of the saved floating-point tensors")
@click.option("--fuse", type=click.Choice(["auto", "off"]), default="auto", show_default=True,
              help="auto: a network's runs (seeds, a sweep's recipes) train as one fused group where it pays; "
                   "off: one run at a time")
@click.option("--no-cuda-graphs", is_flag=True, help="CUDA: step eagerly, never replaying a captured training step")
@click.option("--quiet", is_flag=True, help="no progress bar; only the summary line")
def train(zoo_dir, dataset, data_root, download, results, epochs, networks, seeds, shard, workers, device,
          recipe_ref, executor, address, gpus_per_task, no_lenses, save_weights, weights_dtype, fuse, no_cuda_graphs,
          quiet) -> None:
    """Train every network of a zoo and record each epoch, every test prediction and the trained weights under
    --results.

    Rerunning the same command resumes: whole networks are skipped, nothing is duplicated, and every network
    `netzoo verify` reports (damaged, incomplete, inconsistent) is trained again. A zoo or dataset that
    conflicts with what --results already holds is refused.

    Example:

        netzoo train --zoo zoo/mnist --dataset mnist --data-root ../shared/datasets --results results/mnist
    """
    import logging

    from netzoo.runner import run_job

    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, format="%(levelname)s %(message)s")
    job = _train_job(zoo_dir, dataset, results, data_root=data_root, download=download, epochs=epochs,
                     networks=networks, seeds=seeds, shard=shard, workers=workers, device=device, recipe=recipe_ref,
                     executor=executor, address=address, gpus_per_task=gpus_per_task, lenses=not no_lenses,
                     save_weights=save_weights, weights_dtype=weights_dtype, fuse=fuse,
                     cuda_graphs=not no_cuda_graphs, quiet=quiet)
    summary = run_job(job)
    click.echo(summary.line())
    if summary.failed:
        sys.exit(1)


@cli.command()
@click.option("--results", type=PATH, required=True)
def status(results) -> None:
    """Done / diverged / failed / left per family, and the completeness of networks × seeds × recipes.

    Example:

        netzoo status --results results/digits
    """
    from netzoo.status import status_report

    click.echo(status_report(results))


@cli.command()
@click.option("--results", type=PATH, required=True)
def verify(results) -> None:
    """Read every file of every key; print each damaged, incomplete or inconsistent key, then a summary.

    Exits 0 when every key is whole, 1 otherwise; `netzoo train` retrains what it reports.

    Example:

        netzoo verify --results results/mnist
    """
    from netzoo.verify import verify_report

    text, ok = verify_report(results)
    click.echo(text)
    if not ok:
        sys.exit(1)


@cli.command()
@click.option("--results", type=PATH, required=True)
def compact(results) -> None:
    """Merge each table's part files into a few large sorted files (atomically; a kill loses nothing).

    Example:

        netzoo compact --results results/mnist
    """
    from netzoo.compact import compact_results

    click.echo(compact_results(results))


@cli.command()
@click.option("--results", type=PATH, required=True)
@click.option("--out", type=PATH, required=True, help="a new (or empty) folder for the export")
def export(results, out) -> None:
    """Export the whole networks of RESULTS as a dataset anyone can load without netzoo: Parquet tables, the
    generated code, a dataset card (README.md, read by the Hugging Face Hub) and Croissant metadata.

    Example:

        netzoo export --results results/mnist --out exports/mnist
    """
    from netzoo.export import export_results

    path = export_results(results, out)
    click.echo(f"export: {path} (README.md, croissant.json, data/, zoos/)")


# --- analysis ------------------------------------------------------------------------------------
@cli.command()
@click.option("--results", type=PATH, required=True)
@click.option("--out", type=PATH, default=None, help="report folder (default RESULTS/report)")
@click.option("--open", "open_browser", is_flag=True, help="open the report in a browser")
@click.option("--select-on", type=click.Choice(["val", "test"]), default=None,
              help="the split networks are picked on (default: val when the results hold a validation split)")
def report(results, out, open_browser, select_on) -> None:
    """Write the HTML report (the exam's answers, charts and findings) to OUT/index.html.

    Networks are picked (best network, gold stars, ensembles, Pareto fronts, best recipe, cascade candidates) on
    the validation split when the results hold one, and reported on the test split; the header says which.

    Example:

        netzoo report --results results/mnist --open
    """
    from netzoo.report import write_report

    path = write_report(results, out=out, open_browser=open_browser, select_on=select_on)
    click.echo(f"report: {path}")


@cli.command()
@click.argument("question")
@click.option("--results", type=PATH, required=True)
@click.option("--csv", "as_csv", is_flag=True, help="print CSV instead of a table")
@click.option("--epoch", type=int, default=None, help="epoch to answer for (default: the last)")
@click.option("--known-label-errors", type=PATH, default=None,
              help="label-issues: FILE of known label errors (one test index per line); prints precision at k")
@click.option("--network", default=None, help="label-issues: the network cleanlab judges alone (default: the "
                                              "best on the validation split, else by training accuracy)")
@click.option("--select-on", type=click.Choice(["val", "test"]), default=None,
              help="the split networks are picked on (default: val when the results hold a validation split)")
def exam(question, results, as_csv, epoch, known_label_errors, network, select_on) -> None:
    """Print one exam question's answer: 1…10, pareto, ensembles, agreement, label-issues or cascades.

    Notes (runs left out, cleanlab missing, precision at k) go to stderr.

    Example:

        netzoo exam 8 --results results/mnist --csv
        netzoo exam label-issues --results results/mnist --known-label-errors errors.txt
    """
    from analysis.exam import answer
    from analysis.population import left_out_note

    frame = answer(question, results, epoch=epoch, known_label_errors=known_label_errors, network=network,
                   select_on=select_on)
    click.echo(frame.to_csv(index=False).rstrip("\n") if as_csv else frame.to_string(index=False))
    notes = frame.attrs.get("notes", [])
    for note in notes:  # what a reader must know beside the table: on stderr, so --csv stays clean
        click.echo(note, err=True)
    if frame.attrs.get("left_out") and not any("left out" in note for note in notes):
        click.echo(left_out_note(frame.attrs["left_out"]).strip(), err=True)


@cli.command()
@click.option("--dataset", default="digits", show_default=True)
@click.option("--data-root", type=PATH, default=None)
@click.option("--epochs", type=int, default=4, show_default=True)
@click.option("--repeat", type=int, default=3, show_default=True)
@click.option("--device", default=None, help="cpu or cuda (default: cuda if present)")
@click.option("--seeds", type=int, default=None, help="seeds per network of the sample (default 8)")
@click.option("--doc", type=PATH, default=Path("docs/benchmarks.md"), show_default=True,
              help="markdown file whose benchmark section is rewritten")
def bench(dataset, data_root, epochs, repeat, device, seeds, doc) -> None:
    """Time the study's way of training against netzoo's, one run at a time and fused, on the same sample (and a
    32-run sweep of one network), and record it in docs/benchmarks.md.

    Example:

        netzoo bench --dataset digits --epochs 4 --repeat 3
    """
    from netzoo.benchmarks.study import run_benchmark

    result = run_benchmark(dataset=dataset, data_root=data_root, epochs=epochs, repeat=repeat,
                           device=device, doc=doc, seeds=seeds)
    click.echo(result.table())


@cli.command()
@click.argument("grid")
@click.option("--zoo", "zoo_dir", type=PATH, required=True)
@click.option("--dataset", required=True)
@click.option("--data-root", type=PATH, default=None)
@click.option("--download", is_flag=True)
@click.option("--results", type=PATH, required=True)
@click.option("--networks", default=None, help="GLOB[,GLOB…] (default: the grid's own selection)")
@click.option("--epochs", type=int, default=None, help="override every recipe's epochs (default: the grid's)")
@click.option("--seeds", default=None, help="training seeds S[,S…] (default 42); each recipe trains once per seed")
@click.option("--device", default=None, help="cpu, cuda, or cuda:0,cuda:1,… (default: cuda if present)")
@click.option("--workers", type=int, default=None, help="worker processes (default: as for netzoo train)")
@click.option("--fuse", type=click.Choice(["auto", "off"]), default="auto", show_default=True,
              help="auto: a network's runs (seeds, a sweep's recipes) train as one fused group where it pays; "
                   "off: one run at a time")
@click.option("--quiet", is_flag=True, help="no progress bars; only the summary line")
def sweep(grid, zoo_dir, dataset, data_root, download, results, networks, epochs, seeds, device, workers,
          fuse, quiet) -> None:
    """Train a subset of the zoo under every recipe of GRID (a shipped name or a PATH.toml).

    Shipped grids: optimizers, regularisation, lr, batch-size, batch-norm, depth-width, deep-mlp, early-stopping.

    Example:

        netzoo sweep optimizers --zoo zoo/digits --dataset digits --results results/sweep-optimizers
    """
    from netzoo.sweep import run_sweep

    summary = run_sweep(grid, zoo=zoo_dir, dataset=dataset, data_root=data_root, download=download,
                        results=results, networks=networks, epochs=epochs, seeds=_ints(seeds),
                        device=device, workers=workers, quiet=quiet, echo=None if quiet else click.echo, fuse=fuse)
    click.echo(summary.line())
    if summary.failed:
        sys.exit(1)


@cli.command()
@click.argument("results_a", type=PATH)
@click.argument("results_b", type=PATH)
@click.option("--out", type=PATH, default=None, help="also write the comparison report here")
def compare(results_a, results_b, out) -> None:
    """Compare one zoo trained on two datasets: rank correlation per family, findings that hold on both.

    Example:

        netzoo compare results/mnist results/fashion-mnist
    """
    from analysis.compare import compare_text

    click.echo(compare_text(results_a, results_b, out=out))


# OS-level faults a user can fix: (exit code, what to do). Any other exception is a bug: its traceback shows.
OS_FAULTS = {
    errno.ENOSPC: (1, "free space, then rerun the same command: finished work is kept, nothing half-written counts"),
    errno.EDQUOT: (1, "free space or raise the quota, then rerun the same command: finished work is kept"),
    errno.EROFS: (2, "the file system is read-only: pass a writable folder"),
    errno.EACCES: (2, "fix its permissions, or pass a folder you can write"),
    errno.EPERM: (2, "fix its permissions, or pass a folder you can write"),
    errno.ENOTDIR: (2, "a part of the path is a file: pass a folder"),
}


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI; netzoo's own errors and OS-level faults print as one line.

    Only a real Ctrl-C prints 'aborted' (exit 130): click's own ``main`` would also turn an EOFError raised
    inside a command into an abort, hiding a bug, so the command is invoked here directly.
    """
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        with cli.make_context("netzoo", args) as ctx:
            cli.invoke(ctx)
    except NetzooError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except (KeyboardInterrupt, click.exceptions.Abort):
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except OSError as exc:
        if exc.errno == errno.EPIPE:  # `netzoo zoo list | head`: the reader is gone, nothing to say
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit's flush
            sys.exit(1)
        if exc.errno not in OS_FAULTS:
            raise
        code, fix = OS_FAULTS[exc.errno]
        where = f": {exc.filename}" if exc.filename else ""
        click.echo(f"error: {exc.strerror or exc}{where}; {fix}.", err=True)
        sys.exit(code)


if __name__ == "__main__":
    main()
