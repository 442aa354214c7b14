"""Container image references, as Docker's distribution/reference grammar defines them:

    [registry[:port]/]path[/path...][:tag][@algorithm:hex]

e.g. `qtrain/runner:latest`, `registry.example.com:5000/team/runner:1.2`,
`ghcr.io/org/runner@sha256:<64 hex>`.  Anything else is refused before it reaches a command line
(`--privileged` as an image would be an option of `docker run`), a task constant or a registry.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?"
_TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
REFERENCE = re.compile(rf"(?P<name>(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*)"
                       rf"(?::(?P<tag>{_TAG}))?(?:@(?P<digest>{_DIGEST}))?")
NAME_MAX = 255


@dataclass(frozen=True)
class ImageRef:
    name: str  # registry and repository: DOCKER_REPO
    tag: str | None
    digest: str | None

    @property
    def docker_tag(self) -> str:
        """DOCKER_TAG: the tag (latest when none), with the digest after it when pinned
        (`repo:tag@sha256:...` is what Docker pulls)."""
        return (self.tag or "latest") + (f"@{self.digest}" if self.digest else "")


def parse_image(value: str) -> ImageRef:
    """The reference, or ValueError saying what is wrong with it."""
    if not isinstance(value, str) or not value:
        raise ValueError("an image reference is needed, e.g. qtrain/runner:latest")
    if value.startswith("-"):
        raise ValueError(f"{value!r} starts with '-': an image reference never does")
    match = REFERENCE.fullmatch(value)
    if not match:
        raise ValueError(f"{value!r} is not an image reference ([registry[:port]/]repository[:tag][@sha256:digest], "
                         f"lowercase repository, e.g. qtrain/runner:latest)")
    if len(match["name"]) > NAME_MAX:
        raise ValueError(f"the repository name is longer than {NAME_MAX} characters")
    return ImageRef(match["name"], match["tag"], match["digest"])


def image_error(value: str) -> str | None:
    """Why `value` is not a valid image reference, or None."""
    try:
        parse_image(value)
    except ValueError as exc:
        return str(exc)
    return None
