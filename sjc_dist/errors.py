"""Named errors that teach the user: each says which field, what value, and what is allowed."""


class SJCError(Exception):
    """Base class of every error sjc_dist raises on purpose."""


class ConfigError(SJCError, ValueError):
    """A configuration value is out of its allowed range, of the wrong type, or unknown."""

    def __init__(self, field: str, value: object, allowed: str):
        self.field, self.value, self.allowed = field, value, allowed
        super().__init__(f"config field '{field}' = {value!r} is not allowed: {allowed}")


class ModelNotFoundError(SJCError, FileNotFoundError):
    """A model path or cache entry does not exist (nothing is downloaded)."""

    def __init__(self, name: str, detail: str = ""):
        self.name = name
        msg = (f"model '{name}' was not found: give 'toy', 'empirical', a local diffusers folder, "
               f"or a Hugging Face repo id already in the local cache (nothing is downloaded)")
        super().__init__(msg + (f" ({detail})" if detail else ""))


class ResumeError(SJCError):
    """`--resume` names a folder that cannot be continued; says what is missing (nothing is written)."""

    def __init__(self, run_dir: str, problem: str):
        self.run_dir, self.problem = run_dir, problem
        super().__init__(f"cannot resume '{run_dir}': {problem}")


class DivergenceError(SJCError, FloatingPointError):
    """The optimisation produced a NaN or Inf (or a field beyond its bound); the last good checkpoint is kept."""

    def __init__(self, step: int, quantity: str, checkpoint: str | None = None, reason: str = "is NaN or Inf"):
        self.step, self.quantity, self.checkpoint = step, quantity, checkpoint
        where = (f"; last good checkpoint and its config.json kept: {checkpoint}" if checkpoint
                 else "; no checkpoint was written yet")
        super().__init__(f"run diverged at step {step}: {quantity} {reason}{where}")
