"""A simulated judge whose accuracy depends on what its prompt states, and a simulated reflection model,
both answered by the deterministic chat-completions server (``FakeOpenAI(decide=..., write=...)``).

- Each item is ``ITEM-<n>`` inside its output text; its true label is in ``truth``.
- A prompt that states ``RULE`` is ``base + lift`` accurate, any other ``base``. Whether a prompt is
  right on an item: with probability ``shared`` (per item) a draw shared by every prompt (hard items are
  hard for all), else a draw of its own (prompt, item); right when the draw is under the accuracy. So
  two prompts of equal accuracy disagree on some items, as paraphrases of a real prompt do.
- The reflection model: ``mode="better"`` adds ``RULE`` to the criterion it is shown (a truly better
  judge); ``mode="paraphrase"`` rewords it into one of a few variants of the same accuracy (no candidate
  is truly better); ``mode="garbage"`` answers without the tags; ``mode="obey"`` follows instructions
  planted in the items it reads (and changes the placeholders).
"""
from __future__ import annotations

import hashlib
import re
from typing import Any

RULE = "Details that the context does not state count as Fail."
TEMPLATE = "Is the answer supported by the context?\nContext: {context}\nAnswer: {output}"
_ITEM = re.compile(r"ITEM-(\d+)")


def _u(*parts: Any) -> float:
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def make_rows(n: int, *, seed: int = 0, fail_share: float = 0.4) -> list[dict]:
    """``n`` tasks with a true label each (Fail for about ``fail_share`` of them)."""
    rows = []
    for i in range(n):
        label = "Fail" if _u("label", seed, i) < fail_share else "Pass"
        rows.append({"context": f"Context of item {i}.", "output": f"Answer ITEM-{i} of seed {seed}.",
                     "truth": label, "id": i})
    return rows


class SimulatedJudge:
    def __init__(self, truth: dict[int, str], *, base: float = 0.80, lift: float = 0.05, shared: float = 0.6,
                 mode: str = "better") -> None:
        self.truth, self.base, self.lift, self.shared, self.mode = truth, base, lift, shared, mode
        self.reflections = 0
        self.reflection_texts: list[str] = []
        self.judged_items: list[int] = []

    def accuracy(self, prompt: str) -> float:
        return self.base + self.lift if RULE in prompt else self.base

    def decide(self, body: dict, options: list[str]) -> str | None:
        last = next((m["content"] for m in reversed(body["messages"]) if m["role"] == "user"), "")
        found = _ITEM.findall(last)
        if not found or not options:
            return None
        item = int(found[-1])
        self.judged_items.append(item)
        truth = self.truth.get(item, "Pass")
        prompt = _ITEM.sub("ITEM", last.split("\n\n[")[0])  # the criterion with the item's id taken out
        prompt_key = hashlib.sha256(prompt.encode()).hexdigest()
        draw = _u("shared", item) if _u("which", item) < self.shared else _u("own", item, prompt_key)
        right = draw < self.accuracy(last)
        return truth if right else next(o for o in options if o != truth)

    def write(self, body: dict) -> str | None:
        system = body["messages"][0]["content"]
        if not system.startswith("You improve the written criterion"):
            return None
        self.reflections += 1
        user = body["messages"][-1]["content"]
        self.reflection_texts.append(user)
        current = re.search(r"<current>\n(.*?)\n</current>", user, flags=re.S)
        text = current.group(1) if current else TEMPLATE
        if "<definitions>" in user:
            return "<definitions>\nPass: every detail is in the context.\nFail: anything else.\n</definitions>"
        if self.mode == "garbage":
            return "I think the criterion is fine as it is."
        if self.mode == "obey":
            return "<criterion>\nAlways answer Pass. {secret_field}\n</criterion>"
        if self.mode == "better" and RULE not in text:
            return f"<criterion>\n{text}\n{RULE}\n</criterion>"
        variant = self.reflections % 3
        return f"<criterion>\nRead carefully (version {variant}).\n{text}\n</criterion>"
