import matplotlib
import pytest
import torch

matplotlib.use("Agg")


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    import matplotlib.pyplot as plt

    plt.close("all")


@pytest.fixture
def digits_data():
    from captum_inverseset.zoo import load_digits_dataset

    return load_digits_dataset()


# Tiny models: intra-op threads only add contention on a 2-core machine, and one
# thread makes timings and float reductions the same everywhere.
torch.set_num_threads(1)
