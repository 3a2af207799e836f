"""User-facing errors. Anything raised as `PromptreelError` is printed without a traceback."""


class PromptreelError(Exception):
    """Base class: a message for a person, already saying what to fix."""


class ConfigError(PromptreelError):
    """Bad input: names the key, the bad value and what is accepted."""

    def __init__(self, key: str, value: object, accepted: str, hint: str = ""):
        self.key, self.value, self.accepted, self.hint = key, value, accepted, hint
        msg = f"{key}: bad value {shown(value)}; accepted: {accepted}"
        if hint:
            msg += f" ({hint})"
        super().__init__(msg)

    def __reduce__(self):  # picklable (multirun records, Prefect states) with its fields
        return type(self), (self.key, self.value, self.accepted, self.hint)


def shown(value: object, limit: int = 120) -> str:
    """repr of a bad value; a long mapping or list (a whole config section) is cut at `limit`
    characters, so the message stays one readable line. Strings and numbers are never cut."""
    text = repr(value)
    if isinstance(value, dict | list | tuple) and len(text) > limit:
        return text[:limit - 5] + " ..." + text[-1]
    return text


class MissingWeightsError(PromptreelError):
    """A model file is absent and cannot be downloaded here."""


class UnsafeCheckpointError(PromptreelError):
    """A checkpoint tried to run code or rebuild a non-tensor object."""


class CorruptArtefactError(PromptreelError):
    """A cached artefact failed its check; it will be regenerated."""
