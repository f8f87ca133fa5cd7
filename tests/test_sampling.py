"""rnnext.sampling (temperature, top-k, top-p) against a plain per-row reference, and batched generation."""
import numpy as np
import pytest

from rnnext import data
from rnnext.experiments import char_lm
from rnnext.sampling import sample, sampling_distribution


def reference_distribution(logits, temperature, top_k, top_p):
    """One row at a time, by the definitions: sort (ties by id), keep the first k, keep while the mass before a
    token is below p, renormalize."""
    out = np.zeros_like(logits, dtype=np.float64)
    for row, values in enumerate(np.asarray(logits, dtype=np.float64)):
        probabilities = np.exp(values / temperature - np.max(values / temperature))
        probabilities /= probabilities.sum()
        ranked = sorted(range(len(values)), key=lambda i: (-probabilities[i], i))
        kept, mass = [], 0.0
        for rank, token in enumerate(ranked):
            if top_k is not None and rank >= top_k:
                break
            if top_p is not None and mass >= top_p:
                break
            kept.append(token)
            mass += probabilities[token]
        out[row, kept] = probabilities[kept] / probabilities[kept].sum()
    return out


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0])
@pytest.mark.parametrize("top_k, top_p", [(None, None), (1, None), (3, None), (None, 0.5), (None, 0.9),
                                          (None, 1.0), (4, 0.8), (100, 0.3)])
def test_distribution_matches_the_definitions(temperature, top_k, top_p):
    logits = np.random.default_rng(0).standard_normal((6, 9)) * 3
    logits[0, :4] = 1.5  # ties at the top: kept in the order of their ids
    got = sampling_distribution(logits, temperature, top_k, top_p)
    np.testing.assert_allclose(got, reference_distribution(logits, temperature, top_k, top_p), rtol=1e-12, atol=0)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, rtol=1e-12)
    if top_k is not None:
        assert ((got > 0).sum(axis=1) <= top_k).all()


def test_sample_draws_only_kept_tokens_and_greedy_is_argmax():
    logits = np.random.default_rng(1).standard_normal((3, 20))
    rng = np.random.default_rng(2)
    allowed = sampling_distribution(logits, 1.0, top_k=2) > 0
    for _ in range(50):
        ids = sample(logits, rng, 1.0, top_k=2)
        assert allowed[np.arange(3), ids].all()
    np.testing.assert_array_equal(sample(logits, rng, 0.0), logits.argmax(axis=1))
    np.testing.assert_array_equal(sample(logits, rng, 1.0, top_k=1), logits.argmax(axis=1))


@pytest.mark.parametrize("options, problem", [
    (dict(temperature=-1.0), "temperature"), (dict(top_k=0), "top_k"), (dict(top_p=0.0), "top_p"),
    (dict(top_p=1.5), "top_p"), (dict(top_k=2.5), "top_k")])
def test_bad_sampling_options_are_named(options, problem):
    with pytest.raises(ValueError, match=rf"sample: {problem} is"):
        sample(np.zeros((1, 3)), np.random.default_rng(0), **{"temperature": 1.0, **options})


@pytest.fixture(scope="module")
def small_lm():
    vocab = data.Vocabulary([chr(97 + i) for i in range(12)] + ["\n", " "])
    return char_lm.build_model(len(vocab), "lstm", 2, 16, embedding=8, seed=1), vocab


def test_a_batch_of_primes_generates_each_as_alone(small_lm):
    """Greedy generation is deterministic: every row of a batch (primes of different lengths, an empty one
    among them) gives the text that prime gives alone."""
    model, vocab = small_lm
    primes = ["abc", "", "lkjih ga", "b"]
    batch = char_lm.generate(model, vocab, 30, primes, temperature=0.0)
    assert isinstance(batch, list) and len(batch) == 4
    for prime, text in zip(primes, batch):
        assert text == char_lm.generate(model, vocab, 30, prime, temperature=0.0), prime


def test_top_k_one_is_greedy_and_generation_checks_its_arguments(small_lm):
    model, vocab = small_lm
    assert char_lm.generate(model, vocab, 25, "ab", 0.8, seed=3, top_k=1) == \
        char_lm.generate(model, vocab, 25, "ab", 0.0)
    text = char_lm.generate(model, vocab, 40, ["a", "b"], 1.0, seed=4, top_p=0.5)
    assert all(len(t) == 40 and set(t) <= set(vocab.tokens) for t in text)
    with pytest.raises(ValueError, match="generate: top_p is"):
        char_lm.generate(model, vocab, 5, "a", 1.0, top_p=2.0)
    with pytest.raises(ValueError, match="expected a str or a non-empty list of str"):
        char_lm.generate(model, vocab, 5, [], 1.0)


def test_generate_command_takes_several_primes(small_lm, tmp_path, capsys):
    model, vocab = small_lm
    path = tmp_path / "lm.npz"
    model.save(path, metadata={"vocab": vocab.to_dict()})
    assert char_lm.generate_main([str(path), "--prime", "ab", "--prime", "c", "--length", "10", "--seed", "1",
                                  "--top-k", "3", "--top-p", "0.9"]) == 0
    first, second = capsys.readouterr().out.split("\n\n")
    assert first.startswith("ab") and len(first) == 12 and second.startswith("c") and len(second.rstrip("\n")) == 11
