"""Short texts for listings: a docstring's or a comment's first sentence, whole, on one line."""

from __future__ import annotations

import re

# a full stop before a capital ends a sentence; those of "et al." and "e.g." do not
SENTENCE_END = re.compile(r"(?<!\bal)(?<!\be\.g)\.\s+(?=[A-Z])")


def first_paragraph(lines: list[str]) -> str:
    """The lines up to the first blank one, joined with single spaces."""
    words: list[str] = []
    for line in lines:
        if not line.strip():
            if words:
                break
            continue
        words.append(line.strip())
    return " ".join(words)


def first_sentence(text: str) -> str:
    """The first sentence of ``text``'s first paragraph, ending with its full stop."""
    paragraph = first_paragraph(text.splitlines())
    sentence = SENTENCE_END.split(paragraph, maxsplit=1)[0].rstrip(".:")  # "::" opens a code block
    return f"{sentence}." if sentence else ""
