"""A trained aligner as an MLflow pyfunc model, so `mlflow.pyfunc.load_model("runs:/<train run id>/model")` scores
raw images and texts.

`vlalign train` logs it into its run (the UI's Models column); its artifacts are the run folder that
`vlalign.load_model` reads, and loading it rebuilds the frozen encoders from their recorded specs just as
`vlalign.load_model` does (a hub encoder must be in the hub's cache or given as `path:` where it loads).

Input: a DataFrame whose columns are all optional (at least one present), each row filling any of them:
- `image`: the bytes of an image file (PNG, JPEG, ...), base64 in a JSON request to a served model;
- `image_path`: a path to an image file where the model runs (used where `image` is empty);
- `text`: a caption.
Output, one row per input row: `image_embedding` and `text_embedding`, L2-normalised float32 lists (None where the
row has no image or text), and `similarity`, the cosine of the row's image and text (NaN unless it has both;
`AlignedModel.similarity` of the two). Load options (`model_config`): `device` ("auto"), `precision` (as trained).
"""

from __future__ import annotations

import io
import json
import math
import tempfile
from importlib.metadata import version
from pathlib import Path

import mlflow.pyfunc
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.types.schema import Array, ColSpec, DataType, Schema

MODEL_NAME = "model"  # runs:/<run id>/model
CODE = Path(__file__).with_name("mlflow_model_code.py")  # what MLflow runs to load the model: no pickle
RUN_FOLDER = "run"  # the artifact holding the trained run folder
SIGNATURE = ModelSignature(
    inputs=Schema([ColSpec(DataType.binary, "image", required=False),
                   ColSpec(DataType.string, "image_path", required=False),
                   ColSpec(DataType.string, "text", required=False)]),
    outputs=Schema([ColSpec(Array(DataType.float), "image_embedding", required=False),
                    ColSpec(Array(DataType.float), "text_embedding", required=False),
                    ColSpec(DataType.double, "similarity", required=False)]),
)  # fmt: skip


def _entries(frame: pd.DataFrame, column: str) -> dict[int, object]:
    """Row position -> value, for the non-empty cells of `column` (none when it is absent)."""
    if column not in frame:
        return {}
    return {i: value for i, value in enumerate(frame[column])
            if value is not None and not (isinstance(value, float) and math.isnan(value))}  # fmt: skip


def score(model, frame: pd.DataFrame) -> pd.DataFrame:
    """The output described in the module docstring, of an `AlignedModel` on an input DataFrame."""
    from vlalign.data.images import decode_rgb

    if not any(column in frame for column in ("image", "image_path", "text")):
        raise ValueError(f"vlalign model input needs an image, image_path or text column; got {list(frame.columns)}")
    images = _entries(frame, "image_path")
    images.update({i: decode_rgb(bytes(data)) for i, data in _entries(frame, "image").items()})
    texts = {i: str(text) for i, text in _entries(frame, "text").items()}
    image_rows = dict(zip(images, model.encode_image(list(images.values())).numpy())) if images else {}
    text_rows = dict(zip(texts, model.encode_text(list(texts.values())).numpy())) if texts else {}
    rows = range(len(frame))
    return pd.DataFrame({
        "image_embedding": [image_rows.get(i) for i in rows],
        "text_embedding": [text_rows.get(i) for i in rows],
        # Both are L2-normalised: their dot product is the cosine, one entry of AlignedModel.similarity.
        "similarity": [float(image_rows[i] @ text_rows[i]) if i in image_rows and i in text_rows else math.nan
                       for i in rows],
    }, index=frame.index)  # fmt: skip


class AlignerModel(mlflow.pyfunc.PythonModel):
    """The pyfunc around `vlalign.load_model`."""

    def load_context(self, context) -> None:
        from vlalign.model import load_model

        options = context.model_config or {}
        self.model = load_model(context.artifacts[RUN_FOLDER], device=options.get("device", "auto"),
                                precision=options.get("precision"))  # fmt: skip

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        return score(self.model, model_input)


def input_example() -> pd.DataFrame:
    """A one-row input: a small grey PNG and a caption."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (128, 128, 128)).save(buffer, format="PNG")
    return pd.DataFrame({"image": [buffer.getvalue()], "text": ["a grey square"]})


def requirements() -> list[str]:
    """Pinned from this environment, not inferred: inference would load the model and may reach the network."""
    return [f"{name}=={version(name)}" for name in ("vlalign", "mlflow", "torch")]


def log_aligner(tracked, folder: str | Path) -> None:
    """Log the trained run folder `folder` as the MLflow model of the tracked run; a store error is reported like
    every tracking call, never raised."""
    tracked.attempt("log model", _log_aligner, tracked.client, tracked.run_id, Path(folder))


def _log_aligner(client, run_id: str, folder: Path) -> None:
    # Not mlflow.pyfunc.log_model: with an input example it loads the model and predicts to check the example,
    # which would build both frozen encoders (billions of parameters at SAIL's scale) inside the train job.
    from mlflow.entities import LoggedModelOutput, LoggedModelStatus
    from mlflow.models import Model

    info = json.loads((folder / "model.json").read_text())
    params = {"image_encoder": info["towers"]["image"]["spec"], "text_encoder": info["towers"]["text"]["spec"],
              "head": info["model"]["head"], "loss": info["train"]["loss"],
              "train_pairs": info["train_pairs"]}  # fmt: skip
    experiment_id = client.get_run(run_id).info.experiment_id
    logged = client.create_logged_model(experiment_id, name=MODEL_NAME, source_run_id=run_id, model_type="vlalign",
                                        params={key: str(value) for key, value in params.items()})  # fmt: skip
    try:
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / MODEL_NAME
            description = Model(artifact_path=logged.artifact_location, run_id=run_id, model_id=logged.model_id,
                                model_uuid=logged.model_id)  # fmt: skip
            mlflow.pyfunc.save_model(local, python_model=CODE, artifacts={RUN_FOLDER: str(folder)},
                                     signature=SIGNATURE, input_example=input_example(),
                                     pip_requirements=requirements(), mlflow_model=description)  # fmt: skip
            client.log_model_artifacts(logged.model_id, str(local))
    except BaseException:
        client.finalize_logged_model(logged.model_id, LoggedModelStatus.FAILED)
        raise
    client.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)
    client.log_outputs(run_id, [LoggedModelOutput(logged.model_id, step=0)])
