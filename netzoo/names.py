"""The naming grammar of networks: a name becomes a class name, a file name and part of result file names.

    Basic | {Family}{Activation}_{i} (LinearReLU_3) | any other plain ASCII Python identifier (NaNNet_1)

Anything else (``../evil``, ``a/b``, a keyword, a newline) could leave a folder or a class statement, so every
place where a name becomes a path or code calls ``check_network_name`` first.
"""

from __future__ import annotations

import keyword
import re

from netzoo.errors import NetworkNameError

MAX_NAME = 128  # characters: '<name>--<recipe_hash>--<seed>.parquet' stays under the 255-byte file name limit
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def check_network_name(name: object) -> str:
    """``name`` when it is a plain ASCII identifier of at most 128 characters and no keyword; else
    NetworkNameError naming it and what is allowed."""
    if (not isinstance(name, str) or len(name) > MAX_NAME or not _IDENTIFIER.fullmatch(name)
            or keyword.iskeyword(name)):
        shown = repr(name) if len(repr(name)) <= 80 else repr(name)[:77] + "..."
        raise NetworkNameError(f"{shown} is not a network name; allowed: Basic, {{Family}}{{Activation}}_{{i}} "
                               f"(e.g. LinearReLU_3) or a plain ASCII identifier of at most {MAX_NAME} characters.")
    return name
