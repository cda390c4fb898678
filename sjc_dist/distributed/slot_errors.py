"""The two errors a SceneWorker's slots raise across Ray: plain-message exceptions, so they pickle as they are
(the engine's ConfigError and DivergenceError carry extra fields, which Ray could not rebuild). Kept apart from
stepper.py so that trials can catch them without importing torch."""


class SlotError(Exception):
    """A slot could not be opened or used (bad config, unknown slot); the message says why."""


class WorkerFull(Exception):
    """Every slot of this worker is taken; try another worker or wait."""
