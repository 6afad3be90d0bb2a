"""Teacher names (no heavy imports, so configs validate without torch)."""

ALIKED_MODELS: tuple[str, ...] = ("aliked-n16", "aliked-t16", "aliked-n32", "aliked-n16rot")
TEACHERS: tuple[str, ...] = ("superpoint", *ALIKED_MODELS, "disk")
#: Joins the members of an ensemble teacher: ``aliked-n16+aliked-n16rot``.
ENSEMBLE_SEP = "+"


def ensemble_members(name: str) -> tuple[str, ...]:
    """The member names of ``name`` (one name for a single teacher)."""
    return tuple(name.split(ENSEMBLE_SEP))
