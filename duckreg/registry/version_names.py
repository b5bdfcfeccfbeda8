"""Readable generated version names (``brave_otter_3``) for versions logged without ``version_name``."""

from __future__ import annotations

import random
from collections.abc import Callable

_ADJECTIVES = (
    "able brave calm clever cosmic crisp eager fancy gentle happy jolly keen lively lucky merry "
    "mighty noble proud quick quiet rapid shiny silent smart sunny swift tidy vivid witty zesty"
).split()
_ANIMALS = (
    "badger bat bear beaver bison camel cat cobra crane deer dingo dolphin eagle falcon ferret fox "
    "gecko heron ibis koala lemur lynx marten moose otter owl panda puffin quail raven seal tiger"
).split()


def generate_version_name(taken: Callable[[str], bool]) -> str:
    """A name such as ``brave_otter_3`` for which ``taken(name)`` is false."""
    rng = random.Random()
    for _ in range(1000):
        name = f"{rng.choice(_ADJECTIVES)}_{rng.choice(_ANIMALS)}_{rng.randint(1, 4)}"
        if not taken(name):
            return name
    raise RuntimeError("Could not generate a unique version name; pass version_name explicitly.")
