"""A trial whose last checkpoint never reached storage (its worker was killed while saving it) starts again from
step 0 instead of failing: Ray's own restore raises there, and the fault test that kills a worker mid-sweep lost a
trial that way about one run in three."""
import pytest
from ray import tune
from ray.train._internal.session import _TrainingResult

from sjc_dist.distributed.trainable import SJCTrainable, TrialContext


class LocalTrainable(SJCTrainable):
    """SJCTrainable outside Tune: the context tune.with_parameters would pass, no pool (no slot is opened)."""

    def setup(self, config):
        super().setup(config, TrialContext(base={}, pool=None, report_every=1, metric="score", mode="max",
                                           trials_dir="/nonexistent"))


def missing_checkpoint(tmp_path) -> _TrainingResult:
    gone = tune.Checkpoint.from_directory(str(tmp_path / "checkpoint_000000"))
    return _TrainingResult(checkpoint=gone, metrics={"training_iteration": 3})


def test_rays_restore_raises_on_a_checkpoint_missing_from_storage(tmp_path):
    with pytest.raises(ValueError, match="does not exist on storage"):
        tune.Trainable.restore(LocalTrainable(config={"params": {}}), missing_checkpoint(tmp_path))


def test_a_missing_checkpoint_restarts_the_trial_from_step_zero(tmp_path):
    trial = LocalTrainable(config={"params": {"seed": 2}})
    trial.restore(missing_checkpoint(tmp_path))
    assert trial.iteration == 0 and trial.slot is None and trial.params == {"seed": 2}
