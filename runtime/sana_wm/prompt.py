"""The prompt: Gemma-2 hidden states, a precomputed embedding file, or the empty prompt.

- With a local Gemma-2 folder (`GemmaPromptEncoder`), the prompt is prefixed with the official
  "complex human instruction" and encoded as the official scripts do (right padding, BOS plus the last
  `max_length - 1` tokens); results are cached to a `.pt` file keyed by the prompt and folder.
- A precomputed file (`load_prompt_file`) holds {"embeds": (L, C) or (1, L, C), "mask": (L,) or (1, L)}.
- Without either, `empty_prompt` uses the checkpoint's learned `y_embedder.y_embedding` (the embedding the
  model was trained to see for a dropped caption). The official streaming script instead encodes
  the instruction prefix plus "" with Gemma; load that encoding as a prompt file for exact parity.
Nothing here touches the network: transformers loads with `local_files_only=True`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch

CHI_PROMPT = "\n".join(
    [
        'Given a user prompt, generate an "Enhanced prompt" that provides detailed visual descriptions suitable for '
        "image generation. Evaluate the level of detail in the user prompt:",
        "- If the prompt is simple, focus on adding specifics about colors, shapes, sizes, textures, and spatial "
        "relationships to create vivid and concrete scenes.",
        "- If the prompt is already detailed, refine and enhance the existing details slightly without "
        "overcomplicating.",
        "Here are examples of how to transform or refine prompts:",
        "- User Prompt: A cat sleeping -> Enhanced: A small, fluffy white cat curled up in a round shape, sleeping "
        "peacefully on a warm sunny windowsill, surrounded by pots of blooming red flowers.",
        "- User Prompt: A busy city street -> Enhanced: A bustling city street scene at dusk, featuring glowing street "
        "lamps, a diverse crowd of people in colorful clothing, and a double-decker bus passing by towering glass "
        "skyscrapers.",
        "Please generate only the enhanced description for the prompt below and avoid including any additional "
        "commentary or evaluations:",
        "User Prompt: ",
    ]
)


@dataclass
class PromptEmbedding:
    embeds: torch.Tensor  # (1, L, caption_channels)
    mask: torch.Tensor  # (1, L), 1 = real token

    def to(self, device: torch.device | str, dtype: torch.dtype) -> PromptEmbedding:
        return PromptEmbedding(self.embeds.to(device, dtype), self.mask.to(device))


def empty_prompt(y_embedding: torch.Tensor | None, caption_channels: int, tokens: int) -> PromptEmbedding:
    """The learned null caption when the checkpoint has one, else a single zero token."""
    if y_embedding is not None:
        emb = y_embedding.float().reshape(1, -1, caption_channels)
        return PromptEmbedding(emb, torch.ones(1, emb.shape[1]))
    mask = torch.zeros(1, tokens)
    mask[:, 0] = 1
    return PromptEmbedding(torch.zeros(1, tokens, caption_channels), mask)


def load_prompt_file(path: str | Path, caption_channels: int) -> PromptEmbedding:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prompt embedding file {path} does not exist")
    data = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(data, dict) or "embeds" not in data:
        raise ValueError(f"{path}: expected a dict with 'embeds' (L, {caption_channels}) and optional 'mask' (L,)")
    emb = data["embeds"].float().reshape(1, -1, data["embeds"].shape[-1])
    if emb.shape[-1] != caption_channels:
        raise ValueError(f"{path}: embedding width {emb.shape[-1]}, the model expects {caption_channels}")
    mask = data.get("mask", torch.ones(emb.shape[1])).reshape(1, -1).float()
    return PromptEmbedding(emb, mask)


class GemmaPromptEncoder:
    """Gemma-2 hidden states from a local folder, cached on disk."""

    def __init__(self, folder: str | Path, cache_dir: str | Path, device: str = "cpu", max_length: int = 300):
        self.folder, self.cache_dir = Path(folder), Path(cache_dir)
        self.device, self.max_length = device, max_length
        self._model = self._tokenizer = None

    def _load(self) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if not self.folder.is_dir():
            raise FileNotFoundError(f"text encoder folder {self.folder} does not exist (a local Gemma-2 folder)")
        self._tokenizer = AutoTokenizer.from_pretrained(self.folder, local_files_only=True)
        self._model = AutoModelForCausalLM.from_pretrained(self.folder, local_files_only=True).eval().to(self.device)

    @torch.no_grad()
    def encode(self, prompt: str) -> PromptEmbedding:
        key = hashlib.sha256(f"{self.folder.resolve()}\0{self.max_length}\0{prompt}".encode()).hexdigest()[:24]
        cached = self.cache_dir / f"prompt-{key}.pt"
        if cached.is_file():
            data = torch.load(cached, map_location="cpu", weights_only=True)
            return PromptEmbedding(data["embeds"], data["mask"])
        if self._model is None:
            self._load()
        tok = self._tokenizer
        length = len(tok.encode(CHI_PROMPT)) + self.max_length - 2
        ids = tok(
            [CHI_PROMPT + prompt],
            max_length=length,
            padding="max_length",
            padding_side="right",
            truncation=True,
            return_tensors="pt",
        ).to(self.device)
        out = self._model(input_ids=ids.input_ids, attention_mask=ids.attention_mask, output_hidden_states=True)
        select = [0] + list(range(-self.max_length + 1, 0))
        emb = PromptEmbedding(
            out.hidden_states[-1][:, select].float().cpu(), ids.attention_mask[:, select].float().cpu()
        )
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        torch.save({"embeds": emb.embeds, "mask": emb.mask}, cached)
        return emb
