"""`sera generate`: sample a model's responses to evaluation prompts.

Output (``--format jsonl``, default): one line per response,
``{"id", "prompt", "output", "generator"}`` plus ``"sample"`` (0-based) when ``num_samples > 1``
and ``"finished"`` (False when the response hit ``max_new_tokens`` before EOS).
``--format alpaca_eval`` writes AlpacaEval's model-outputs JSON: a list of
``{"instruction", "output", "generator"}`` (+ ``"dataset"`` when the prompts carry it), one
response per prompt.

Backends: ``hf`` (batched Hugging Face `generate`, CPU or GPU) and ``vllm`` (GPU; needs the
``sera[vllm]`` extra). The chat template is applied when the tokenizer has one. A GGUF checkpoint
(``gguf_file``, or `model` given as the path of a ``.gguf`` file) is de-quantised to `dtype` and
sampled with the hf backend; the vllm backend refuses it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sera.errors import SeraInputError, SeraRuntimeError
from sera.eval.prompts import PromptRecord, load_prompts
from sera.generation import SamplingParams
from sera.io import write_json, write_jsonl

BACKENDS = ("hf", "vllm")
FORMATS = ("jsonl", "alpaca_eval")


@dataclass(frozen=True)
class GenerateResult:
    output: Path
    num_prompts: int
    num_responses: int
    num_unfinished: int
    generator: str


def generate(model: str, prompts: str, output: str | Path, *, backend: str = "hf",
             params: SamplingParams | None = None, batch_size: int = 16, seed: int | None = 0,
             output_format: str = "jsonl", generator: str | None = None, split: str | None = None,
             prompt_field: str | None = None, limit: int | None = None, dtype: str = "auto",
             trust_remote_code: bool = False, gguf_file: str | None = None) -> GenerateResult:
    """Generate responses of `model` to the prompts in `prompts` and write them to `output`.

    `dtype`, `gguf_file` and `trust_remote_code` load the model as `sera train` does
    (:func:`sera.models.load_model`)."""
    params = params or SamplingParams(num_samples=1, temperature=0.7, top_p=0.95, max_new_tokens=512)
    if backend not in BACKENDS:
        raise SeraInputError(f"--backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    if output_format not in FORMATS:
        raise SeraInputError(f"--format {output_format!r}: choose one of {', '.join(FORMATS)}")
    if output_format == "alpaca_eval" and params.num_samples != 1:
        raise SeraInputError("--format alpaca_eval holds one response per prompt: use --num-samples 1")
    if params.num_samples < 1 or params.max_new_tokens < 1 or batch_size < 1:
        raise SeraInputError("--num-samples, --max-new-tokens and --batch-size must be at least 1")
    if not 0.0 < params.top_p <= 1.0 or params.temperature < 0:
        raise SeraInputError("--top-p must be in (0, 1] and --temperature at least 0")
    if limit is not None and limit < 1:
        raise SeraInputError("--limit must be at least 1")
    from sera.models import split_gguf

    if backend == "vllm" and split_gguf(model, gguf_file)[1] is not None:
        raise SeraInputError("--backend vllm does not load GGUF checkpoints here (vLLM's GGUF support is "
                             "experimental and untested with sera): use --backend hf, which de-quantises the file "
                             "to --dtype")

    records = load_prompts(prompts, split=split, prompt_field=prompt_field, limit=limit)
    generator = generator or _default_generator(model, gguf_file)
    if backend == "vllm":
        texts = _generate_vllm(model, records, params, seed=seed, dtype=dtype, trust_remote_code=trust_remote_code)
    else:
        texts = _generate_hf(model, records, params, batch_size=batch_size, seed=seed, dtype=dtype,
                             trust_remote_code=trust_remote_code, gguf_file=gguf_file)

    output = Path(output)
    unfinished = sum(not finished for samples in texts for _, finished in samples)
    if output_format == "alpaca_eval":
        rows = []
        for record, samples in zip(records, texts):
            row = {"instruction": record.prompt, "output": samples[0][0], "generator": generator}
            if "dataset" in record.extra:
                row["dataset"] = record.extra["dataset"]
            rows.append(row)
        write_json(output, rows)
    else:
        rows = []
        for record, samples in zip(records, texts):
            for index, (text, finished) in enumerate(samples):
                row = {"id": record.id, "prompt": record.prompt, "output": text, "generator": generator}
                if params.num_samples > 1:
                    row["sample"] = index
                row["finished"] = finished
                rows.append(row)
        write_jsonl(output, rows)
    return GenerateResult(output=output, num_prompts=len(records), num_responses=len(rows),
                          num_unfinished=unfinished, generator=generator)


def prompt_token_ids(tokenizer, record: PromptRecord) -> list[int]:
    """The prompt as the model sees it: chat template (with the generation prompt) when there is one."""
    if getattr(tokenizer, "chat_template", None):
        encoded = tokenizer.apply_chat_template(record.messages, add_generation_prompt=True, tokenize=True,
                                                return_dict=True)
        return list(encoded["input_ids"])
    text = record.prompt if len(record.messages) <= 1 else "\n\n".join(m["content"] for m in record.messages)
    return list(tokenizer(text)["input_ids"])


def _generate_hf(model_path, records, params, *, batch_size, seed, dtype, trust_remote_code, gguf_file=None):
    from sera.generation import generate_completions
    from sera.models import load_model, load_tokenizer

    tokenizer = load_tokenizer(model_path, trust_remote_code=trust_remote_code, gguf_file=gguf_file)
    model = load_model(model_path, dtype=dtype, trust_remote_code=trust_remote_code, gguf_file=gguf_file)
    ids = [prompt_token_ids(tokenizer, record) for record in records]
    try:
        completions = generate_completions(model, tokenizer, ids, params, batch_size=batch_size, seed=seed,
                                           description="generating")
    except RuntimeError as exc:  # out of memory, device errors
        raise SeraRuntimeError(f"generation failed: {str(exc).splitlines()[0]} "
                               "(try a smaller --batch-size or --max-new-tokens)") from exc
    return [[(c.text, c.finished) for c in samples] for samples in completions]


def _generate_vllm(model_path, records, params, *, seed, dtype, trust_remote_code):  # pragma: no cover - GPU only
    try:
        import torch
        import vllm
    except ImportError:
        vllm = None
    if vllm is None or not torch.cuda.is_available():
        raise SeraInputError("backend vllm needs the vllm extra and a GPU (pip install 'sera[vllm]'); "
                             "use --backend hf otherwise")
    from sera.models import load_tokenizer

    tokenizer = load_tokenizer(model_path, trust_remote_code=trust_remote_code)
    llm = vllm.LLM(model=model_path, dtype="auto" if dtype == "auto" else dtype, seed=seed or 0,
                   trust_remote_code=trust_remote_code)
    sampling = vllm.SamplingParams(n=params.num_samples, temperature=params.temperature,
                                   top_p=params.top_p if params.temperature > 0 else 1.0,
                                   max_tokens=params.max_new_tokens, seed=seed)
    inputs = [{"prompt_token_ids": prompt_token_ids(tokenizer, record)} for record in records]
    results = llm.generate(inputs, sampling)
    return [[(o.text, o.finish_reason == "stop") for o in result.outputs] for result in results]


def _default_generator(model: str, gguf_file: str | None = None) -> str:
    """The model directory's name, or the GGUF file's name without `.gguf` (one folder may hold several)."""
    from sera.models import split_gguf

    folder, file = split_gguf(model, gguf_file)
    if file is not None:
        return Path(file).name.removesuffix(".gguf")
    path = Path(folder)
    return path.name if path.name else str(folder)
