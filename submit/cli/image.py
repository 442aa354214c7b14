"""`qtrain image ...`: the runner images."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from submit.cli.common import JsonOption, app, command, console


# --------------------------------------------------------------------------------------- image
image_app = typer.Typer(help="The runner images (docker/Dockerfile) that Qarnot and the emulator run.",
                        no_args_is_help=True, rich_markup_mode=None)
app.add_typer(image_app, name="image")


@command("build", group=image_app)
def image_build(gpu: bool = typer.Option(False, "--gpu", help="The CUDA variant (a CUDA build of torch)."),
                tag: Optional[str] = typer.Option(None, help="Image tag (default qtrain/runner:latest, "
                                                             "--gpu: qtrain/runner:gpu)."),
                offline: bool = typer.Option(False, "--offline", help="No registry access: a debootstrap "
                                             "base (unless --base) and packages from a wheelhouse made "
                                             "here with pip download."),
                base: Optional[str] = typer.Option(None, help="Base image (default python:3.11-slim-"
                                                              "bookworm; --gpu: an nvidia/cuda image)."),
                requirements: Optional[Path] = typer.Option(
                    None, "--requirements", metavar="FILE",
                    help="Instead: the runner image (--tag, default qtrain/runner:latest) plus the packages of a "
                         "requirements file, as IMAGE-req-<hash>: what a job with resources.requirements runs. "
                         "From the package index this machine reaches, or a wheel folder the file names "
                         "(--find-links DIR, --no-index)."),
                as_json: bool = JsonOption) -> None:
    """Build the runner image.  A rebuild after a code change reuses every cached layer but the
    last two and takes seconds.  With --requirements, the image a job with those requirements
    runs (built on first use by the docker executor anyway; ahead of time here)."""
    from submit.image import build, build_derived

    stream = sys.stderr if as_json else sys.stdout

    def log(line: str) -> None:
        print(line, file=stream, flush=True)

    if requirements is not None:
        from jobs.requirements import read_file

        built = build_derived(read_file(requirements), tag or ("qtrain/runner:gpu" if gpu else "qtrain/runner:latest"),
                              log)
    else:
        built = build(gpu=gpu, tag=tag, offline=offline, base=base, log=log)
    print(f"built {built.tag} ({built.image_id[:19]}) in {built.seconds:.1f}s", file=stream, flush=True)
    if as_json:
        print(json.dumps({"tag": built.tag, "image_id": built.image_id, "seconds": built.seconds,
                          "source_digest": built.source_digest}))


@command("push", group=image_app)
def image_push(target: str = typer.Argument(..., help="REPO:TAG in your registry, e.g. "
                                                      "registry.example.com/team/qtrain-runner:1"),
               source: str = typer.Option("qtrain/runner:latest", help="The local image to push."),
               requirements: Optional[Path] = typer.Option(
                   None, "--requirements", metavar="FILE",
                   help="Also push REPO:TAG plus the packages of this requirements file, as "
                        "REPO:TAG-req-<hash>: what Qarnot runs for a job with resources.image REPO:TAG and these "
                        "resources.requirements (built here if needed).")) -> None:
    """Push the runner image to a registry Qarnot can pull from (log in with `docker login`
    first).  Then set resources.image to REPO:TAG; for a private registry export
    QTRAIN_DOCKER_SRV, QTRAIN_REGISTRY_LOGIN and QTRAIN_REGISTRY_PASSWORD before qtrain run."""
    from submit.image import build_derived, push

    def log(line: str) -> None:
        print(line, flush=True)

    digest = push(source, target, log=log)
    console.print(f"pushed {target} ({digest})", highlight=False, markup=False)
    if requirements is not None:
        from jobs.requirements import read_file

        derived = build_derived(read_file(requirements), target, log).tag
        digest = push(derived, derived, log=log)
        console.print(f"pushed {derived} ({digest})", highlight=False, markup=False)
