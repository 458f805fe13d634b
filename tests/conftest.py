import pytest
import torch

from pipeline_fixtures import build_setting

# The suite runs on 2 cores beside other work: one intra-op thread per test process keeps small
# models fast and timings steady instead of oversubscribing the cores.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_setting(tmp_path_factory):
    """Path of a study spec whose data and trained base model exist (built once per test run)."""
    return build_setting(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def ray_cluster():
    """One small local Ray for every test that runs Ray Tune in this process (starting Ray is most
    of a small Ray test's time); `search.ray_runner.connect` finds it running."""
    import ray

    from search.ray_runner import init_ray

    if not ray.is_initialized():
        init_ray(num_cpus=2)
    yield
    ray.shutdown()
