"""User-facing errors. Each names where the bad input is (file, line, field) so the CLI can
print one clear line and exit non-zero before any work starts."""
from __future__ import annotations


class HarnessError(Exception):
    """A problem with the user's input or environment, reported without a traceback."""


class ConfigError(HarnessError):
    def __init__(self, message: str, *, file: str | None = None, line: int | None = None,
                 field: str | None = None):
        self.file, self.line, self.field, self.message = file, line, field, message
        where = ""
        if file:
            where = f"{file}:{line}: " if line else f"{file}: "
        what = f"{field}: " if field else ""
        super().__init__(f"{where}{what}{message}")


class DataError(HarnessError):
    """A data file or image that is missing or malformed; names the file and the record."""
