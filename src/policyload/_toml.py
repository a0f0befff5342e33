"""`tomllib` on every Python the project supports: the standard library's from 3.11, else the
`tomli` backport (the same API; the `bench` extra installs it on 3.10).

One home for the fallback, so that each reader of TOML writes `from ._toml import tomllib`
instead of repeating the try/except. Import it where the TOML is read, not at the top of a
command's module, when the command has uses that need no TOML: on 3.10 without tomli, the
import fails.
"""

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

__all__ = ["tomllib"]
