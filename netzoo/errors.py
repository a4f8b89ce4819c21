"""netzoo's own exceptions. Each message names the problem, where it was, and the fix.

The CLI prints a NetzooError as one line without a traceback (see cli.main).
"""


class NetzooError(Exception):
    """Base class: a problem the user can fix, with a message that says how."""


class SpecError(NetzooError, ValueError):
    """A zoo spec (TOML) is invalid: unknown key, family or activation, empty range, syntax error."""


class RecipeError(NetzooError, ValueError):
    """A recipe or recipe grid (TOML) is invalid."""


class UnknownNetworkError(NetzooError, KeyError):
    """A network name or pattern matches nothing in the zoo."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class ZooError(NetzooError):
    """A zoo folder is damaged or was changed after generation: an unreadable manifest, or a network file whose
    sha256 differs from the one its manifest recorded."""


class NetworkNameError(NetzooError, ValueError):
    """A network name outside the naming grammar (it would become a path or break its class statement)."""


class DatasetError(NetzooError):
    """A dataset is unknown or missing on disk."""


class LabelListError(NetzooError, ValueError):
    """A list of test indices (--known-label-errors FILE) is unreadable, not integers, or outside the test split."""


class ShapeMismatchError(NetzooError, ValueError):
    """A zoo's input shape or class count does not fit the dataset, or a tensor has the wrong shape."""


class ResultsError(NetzooError):
    """A results folder or part file is missing or corrupt."""


class GenerationError(NetzooError):
    """A rendered network failed to import, build or run its forward pass."""


class FusionError(NetzooError, ValueError):
    """Runs of a network cannot be trained as one fused module (netzoo.fuse): train them one at a time."""


class ExportError(NetzooError):
    """An export target that exists and is not empty, or results that cannot be exported whole (a zoo gone)."""
