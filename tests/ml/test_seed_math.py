"""The three questions the product grew from (../shared/seeds), answered as checks that can fail."""

import numpy as np
import torch

from app.ml.model import DotProductBias


def test_seed_example_rowwise_dot_is_not_the_matrix_product() -> None:
    a = torch.tensor([[1.0, 2], [3, 4]])
    b = torch.tensor([[2.0, 2], [10, 10]])
    assert (a * b).sum(1).tolist() == [6.0, 70.0]
    assert (a @ b).tolist() == [[22.0, 22.0], [46.0, 46.0]]
    assert (a @ b.T).diagonal().tolist() == [6.0, 70.0]


def test_batch_of_rowwise_dots_is_the_diagonal_of_the_full_product() -> None:
    generator = torch.Generator().manual_seed(0)
    users = torch.randn(64, 16, generator=generator)
    movies = torch.randn(64, 16, generator=generator)
    rowwise = (users * movies).sum(-1)
    torch.testing.assert_close(rowwise, (users @ movies.T).diagonal())


def test_model_rowwise_equals_cells_of_its_matrix() -> None:
    torch.manual_seed(1)
    model = DotProductBias(30, 40, 8, (0.0, 5.5))
    for table in (model.user_bias, model.movie_bias):
        torch.nn.init.normal_(table.weight)
    users = torch.randint(0, 30, (200,))
    movies = torch.randint(0, 40, (200,))
    full = model.forward_matrix(torch.arange(30), torch.arange(40))
    torch.testing.assert_close(model(users, movies), full[users, movies])


def test_embedding_lookup_is_one_hot_times_the_matrix_in_value_and_gradient() -> None:
    torch.manual_seed(2)
    weight = torch.randn(10, 4)
    embedding = torch.nn.Embedding.from_pretrained(weight.clone(), freeze=False)
    one_hot_weight = weight.clone().requires_grad_(True)
    index = torch.tensor([3, 7, 3, 0])
    upstream = torch.randn(4, 4)

    looked_up = embedding(index)
    one_hot = torch.nn.functional.one_hot(index, num_classes=10).float()
    multiplied = one_hot @ one_hot_weight
    torch.testing.assert_close(looked_up, multiplied)

    (looked_up * upstream).sum().backward()
    (multiplied * upstream).sum().backward()
    torch.testing.assert_close(embedding.weight.grad, one_hot_weight.grad)
    assert embedding.weight.grad[[1, 2, 4, 5, 6, 8, 9]].abs().sum() == 0
    torch.testing.assert_close(embedding.weight.grad[3], upstream[0] + upstream[2])


def keras_dot_axes_2(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Keras `Dot(axes=2)` / `batch_dot(a, b, axes=(2, 2))`, written out by its definition."""
    batch, n, _ = a.shape
    m = b.shape[1]
    out = np.zeros((batch, n, m))
    for s in range(batch):
        for i in range(n):
            for j in range(m):
                out[s, i, j] = (a[s, i, :] * b[s, j, :]).sum()
    return out


def test_dot_along_last_axis_keeps_the_batch_axis() -> None:
    rng = np.random.default_rng(3)
    a = rng.integers(0, 2, size=(2, 3, 4)).astype(np.float32)
    b = rng.integers(0, 2, size=(2, 5, 4)).astype(np.float32)
    expected = keras_dot_axes_2(a, b)
    batched = torch.bmm(torch.from_numpy(a), torch.from_numpy(b).transpose(1, 2))
    assert batched.shape == (2, 3, 5)
    np.testing.assert_allclose(batched.numpy(), expected)
    np.testing.assert_allclose(np.einsum("bnk,bmk->bnm", a, b), expected)


def test_seed_keras_example_dotting_a_with_itself_gives_three_by_three() -> None:
    # The question passed `val` twice (b = K.variable(value=val)), so its output is a . a^T per sample.
    a = np.array(
        [[[0, 1, 1, 1], [1, 1, 0, 0], [0, 0, 1, 1]], [[1, 1, 1, 0], [0, 0, 1, 0], [0, 1, 0, 0]]],
        dtype=np.float32,
    )
    out = keras_dot_axes_2(a, a)
    assert out.shape == (2, 3, 3)
    assert out[0].tolist() == [[3, 1, 2], [1, 2, 0], [2, 0, 2]]
    assert out[1].tolist() == [[3, 1, 1], [1, 1, 0], [1, 0, 1]]
