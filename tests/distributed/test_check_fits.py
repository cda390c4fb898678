"""A local sweep that cannot fit its Ray is refused in one line instead of waiting forever."""
import pytest

from sjc_dist.distributed.spec import ResourcesConfig
from sjc_dist.distributed.sweep import check_fits
from sjc_dist.errors import ConfigError


def test_workers_that_fit_pass():
    check_fits(ResourcesConfig(workers=1, cpus_per_worker=1, gpus_per_worker=0, cpus_per_trial=0.05), 1, {"CPU": 2.0})
    check_fits(ResourcesConfig(workers=2, cpus_per_worker=1, gpus_per_worker=0.5, cpus_per_trial=0.5), 1,
               {"CPU": 3.0, "GPU": 1.0})


def test_a_worker_that_takes_every_cpu_leaves_no_room_for_a_trial():
    r = ResourcesConfig(workers=1, cpus_per_worker=2, gpus_per_worker=0, cpus_per_trial=0.05)
    with pytest.raises(ConfigError, match=r"resources.cpus_per_worker.*the 2 CPUs of the local Ray.*need 2.05"):
        check_fits(r, 1, {"CPU": 2.0})


def test_each_model_has_its_own_workers():
    r = ResourcesConfig(workers=1, cpus_per_worker=1, gpus_per_worker=0, cpus_per_trial=0.05)
    with pytest.raises(ConfigError, match="2 worker"):
        check_fits(r, 2, {"CPU": 2.0})


def test_a_gpu_worker_on_a_machine_without_gpu_is_refused():
    r = ResourcesConfig(workers=1, cpus_per_worker=1, gpus_per_worker=1, cpus_per_trial=0.05)
    with pytest.raises(ConfigError, match=r"resources.gpus_per_worker.*the 0 GPUs.*0 runs on the CPU"):
        check_fits(r, 1, {"CPU": 4.0})
