"""The key of every results row, (network, recipe_hash, seed), and the one way it becomes a file name.

A key's part files (``DIR/<table>/<network>--<recipe_hash>--<seed>.parquet``) and its claim
(``DIR/claims/<network>--<recipe_hash>--<seed>.claim``) carry the key in their names; ``key_name`` writes
such a name and ``key_of_name`` reads one back (None for any other file: a temporary, a compact file).
Network names never hold ``--``: ``key_name`` refuses any name outside netzoo's naming grammar
(``netzoo.names``: ``{Family}{Activation}_{i}`` or a plain identifier), so no key can name a path outside its
folder.
"""

from __future__ import annotations

from netzoo.names import check_network_name

Key = tuple[str, str, int]  # (network, recipe_hash, seed)
SEP = "--"                  # between the key's parts in a file name


def key_name(key: Key, suffix: str) -> str:
    """'<network>--<recipe_hash>--<seed><suffix>', e.g. ('Basic', 'c246d447850f0964', 42) -> 'Basic--c246…--42.parquet'."""
    network, recipe_hash, seed = key
    return f"{check_network_name(network)}{SEP}{recipe_hash}{SEP}{int(seed)}{suffix}"


def key_of_name(name: str, suffix: str) -> Key | None:
    """The key a file name written by ``key_name`` encodes, or None for a name of another form (hidden files
    such as temporaries, another suffix, a seed that is not an integer)."""
    if name.startswith(".") or not name.endswith(suffix):
        return None
    bits = name[:len(name) - len(suffix)].split(SEP)
    if len(bits) != 3 or not bits[2].lstrip("-").isdigit():
        return None
    return bits[0], bits[1], int(bits[2])
