"""User-facing errors. Anything raised as `PromptreelError` is printed without a traceback."""


class PromptreelError(Exception):
    """Base class: a message for a person, already saying what to fix."""


class ConfigError(PromptreelError):
    """Bad input: names the key, the bad value and what is accepted."""

    def __init__(self, key: str, value: object, accepted: str, hint: str = ""):
        self.key, self.value, self.accepted = key, value, accepted
        msg = f"{key}: bad value {value!r}; accepted: {accepted}"
        if hint:
            msg += f" ({hint})"
        super().__init__(msg)


class MissingWeightsError(PromptreelError):
    """A model file is absent and cannot be downloaded here."""


class UnsafeCheckpointError(PromptreelError):
    """A checkpoint tried to run code or rebuild a non-tensor object."""


class CorruptArtefactError(PromptreelError):
    """A cached artefact failed its check; it will be regenerated."""
