"""Teacher names (no heavy imports, so configs validate without torch)."""

ALIKED_MODELS: tuple[str, ...] = ("aliked-n16", "aliked-t16", "aliked-n32", "aliked-n16rot")
TEACHERS: tuple[str, ...] = ("superpoint", *ALIKED_MODELS)
