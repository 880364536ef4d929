"""What a run read, as MLflow datasets: a name, a cheap digest, the path as source, rows and schema where cheap.

The digest is a fingerprint, not a checksum: an embedding store reaches ~50 GB at SAIL's scale and a run must
not read its inputs a second time to say what it read. It covers every file's relative path and size, and the
contents of at most FINGERPRINT_FILES files, the small ones first (meta.json, manifests, index tables): whole up
to FINGERPRINT_WHOLE_BYTES, else FINGERPRINT_BLOCK bytes at the start, middle and end. A store rewritten with other
contents changes a size or a sampled block with near certainty. The producing run's `output.<name>.sha256` tag is
the full checksum, and its `output.<name>.fingerprint` tag equals the digest a consumer logs, linking the two runs.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

FINGERPRINT_WHOLE_BYTES = 1 << 20
FINGERPRINT_BLOCK = 1 << 14
FINGERPRINT_FILES = 256  # bounds the reads in a folder of many files (image folders, thousands of shards)
DIGEST_CHARS = 16  # MLflow stores at most 36
# Parquet (arrow) types as MLflow column types; any other column is described by its arrow type.
ARROW_TO_MLFLOW = {"string": "string", "large_string": "string", "bool": "boolean", "int32": "integer",
                   "int64": "long", "float": "float", "double": "double", "binary": "binary"}  # fmt: skip


def _files(path: Path) -> list[Path]:
    return [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())


def _file_fingerprint(path: Path, size: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        if size <= FINGERPRINT_WHOLE_BYTES:
            digest.update(f.read())
        else:
            for offset in (0, (size - FINGERPRINT_BLOCK) // 2, size - FINGERPRINT_BLOCK):
                f.seek(offset)
                digest.update(f.read(FINGERPRINT_BLOCK))
    return digest.hexdigest()


def fingerprint(path: str | os.PathLike) -> str:
    """A file's or folder's digest from sizes and the contents of a few files, sampled when large (see above)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: input not found")
    files = {file.relative_to(path).as_posix() if file != path else "": file.stat().st_size for file in _files(path)}
    read = sorted(files, key=lambda name: (files[name] > FINGERPRINT_WHOLE_BYTES, name))[:FINGERPRINT_FILES]
    contents = {name: _file_fingerprint(path / name if name else path, files[name]) for name in read}
    listing = [[name, size, contents.get(name)] for name, size in files.items()]
    return hashlib.sha256(json.dumps(listing).encode()).hexdigest()[:DIGEST_CHARS]


def _parquet_description(path: Path) -> tuple[dict, dict]:
    """Rows (from the footer) and MLflow column specs of a parquet file, without reading its data."""
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(path)
    columns = [{"name": field.name, "type": ARROW_TO_MLFLOW.get(str(field.type), str(field.type))}
               for field in parquet.schema_arrow]  # fmt: skip
    return {"num_rows": parquet.metadata.num_rows}, {"mlflow_colspec": columns}


def _embedding_store_description(path: Path) -> tuple[dict, dict]:
    """Rows, encoder and a tensor spec of an embedding store, from its meta.json."""
    meta = json.loads((path / "meta.json").read_text())
    spec = [{"type": "tensor", "tensor-spec": {"dtype": meta["dtype"], "shape": [-1, meta["dim"]]}}]
    return {"num_rows": meta["count"], "encoder": meta.get("spec")}, {
        "mlflow_tensorspec": {"features": json.dumps(spec), "targets": None}}  # fmt: skip


def _beton_description(path: Path) -> tuple[dict, None]:
    """Samples of a .beton, from its header."""
    import numpy as np
    from ffcv.types import HeaderType

    header = np.fromfile(path, dtype=HeaderType, count=1)
    return {"num_rows": int(header["num_samples"][0])}, None


def describe(path: Path) -> tuple[dict, dict | None]:
    """(profile, schema) of an input, read from its metadata only; sizes for anything else."""
    files = _files(path)
    profile: dict = {"bytes": sum(f.stat().st_size for f in files), "files": len(files)}
    schema = None
    if path.is_dir() and (path / "meta.json").is_file() and (path / "index.parquet").is_file():
        found, schema = _embedding_store_description(path)
        profile.update(found)
    elif path.suffix == ".parquet":
        found, schema = _parquet_description(path)
        profile.update(found)
    elif path.suffix == ".beton":
        profile.update(_beton_description(path)[0])
    return profile, schema


def dataset_name(path: Path, root: Path | None) -> str:
    """The path inside the experiment's folder (`embeddings/pool/lite0`), else its last two parts."""
    resolved = path.resolve()
    if root is not None and resolved.is_relative_to(root.resolve()):
        return resolved.relative_to(root.resolve()).as_posix()
    return "/".join(resolved.parts[-2:])


def dataset_input(path: str | os.PathLike, context: str, root: Path | None = None):
    """An MLflow DatasetInput of a local file or folder, with `context` (training, evaluation, ...) as its tag."""
    from mlflow.entities import Dataset, DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    path = Path(path)
    digest = fingerprint(path)
    profile, schema = describe(path)
    dataset = Dataset(name=dataset_name(path, root), digest=digest, source_type="local",
                      source=json.dumps({"uri": str(path.resolve())}), schema=json.dumps(schema) if schema else None,
                      profile=json.dumps(profile))  # fmt: skip
    return DatasetInput(dataset, tags=[InputTag(MLFLOW_DATASET_CONTEXT, context)])
