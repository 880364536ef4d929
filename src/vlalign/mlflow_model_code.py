"""The code MLflow runs to load a logged vlalign model ("models from code"): the model holds this file and the
trained run folder, no pickle. See vlalign.mlflow_model."""

import mlflow.models

from vlalign.mlflow_model import AlignerModel

mlflow.models.set_model(AlignerModel())
