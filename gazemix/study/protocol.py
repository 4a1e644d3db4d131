"""What a study shows a crowd worker besides the items: consent text, instructions, comprehension questions,
and how many items fit in the time a person is paid for.

The flow follows the HILL MixE studies (Collins et al., UAI 2023; jsPsych on Prolific): consent, instructions
with a worked example, practice with feedback, comprehension questions that must all be answered right
(a wrong answer sends the person back to the instructions), the items, and an end page with a completion code.

Time per item is the median response time H-Mix measured (8.4 s for the mixing-factor sliders, 25.8 s for
soft labels; ``spec/gaze_humans.md`` §3.3), rounded up; click mode has no published figure and is assumed
to take as long as the sliders (UNCONFIRMED: check it in a pilot). Consent, instructions, practice and the
questions are budgeted at :data:`OVERHEAD_S`.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import string
from pathlib import Path
from typing import Any

from gazemix.study.db import StudyInputError

__all__ = ["DEFAULT_CONSENT", "INSTRUCTIONS", "QUESTIONS", "SECONDS_PER_ITEM", "TARGET_MINUTES", "OVERHEAD_S",
           "check_questions", "default_items_per_annotator", "estimated_minutes", "load_questions", "read_text_file",
           "study_config"]

TARGET_MINUTES = 15
OVERHEAD_S = 180
SECONDS_PER_ITEM = {"infer": 9, "softlabel": 26, "click": 9}
MAX_QUESTIONS = 10
DEFAULT_TITLE = {"infer": "How much of each? A study of blended pictures",
                 "softlabel": "What do you see? A study of pictures",
                 "click": "What decides the picture? A study of blended pictures"}
_CODE_ALPHABET = string.ascii_uppercase + string.digits

DEFAULT_CONSENT = (
    "You are invited to take part in a short research study about how people see **blended images**. "
    "You will look at pictures and answer a question about each. There are no right or wrong answers for "
    "the study items: we want your own impression.\n\n"
    "- Taking part is voluntary; you may stop at any time by closing the page.\n"
    "- We store your answers, response times and the id you arrive with (for example your Prolific id). "
    "We store no name, e-mail or other personal details.\n"
    "- Your answers are analysed together with other people's answers and may be published in anonymous form.")

INSTRUCTIONS = {
    "infer": "Each picture **blends two photographs**. The two classes are named above the slider. Move the "
             "**mixing slider** to how much of the picture you think is each class: the left end means *all the "
             "class named on the left*, the right end *all the class named on the right*. If it looks like an even "
             "mix, press **50/50**. Then say how **confident** you are. Answer what most people would say.",
    "softlabel": "Each picture may show one or more things. Pick the **most likely class** and how likely it is "
                 "(0-100 %), and, if you see something else, the **second most likely class** and its probability "
                 "(or None). The two probabilities together may be at most 100 %.",
    "click": "Each picture **blends two photographs**; the two classes are named above it. **Click on the picture "
             "where the object that decides what it shows is** (you may click up to 20 times; a red marker shows "
             "each click). Then press Submit.",
}

EXAMPLES = {
    "infer": "**Worked example.** This picture blends a **{a}** and a **{b}**. Suppose it looks about two-thirds "
             "{b} to you: move the slider two-thirds of the way towards the *{b}* end, set your confidence, and "
             "press Submit.",
    "softlabel": "**Worked example.** Suppose you see mostly a **{a}** and perhaps a **{b}**: choose {a} as the most "
                 "likely class with, say, 70 %, and {b} as the second with 20 %.",
    "click": "**Worked example.** This picture blends a **{a}** and a **{b}**. Suppose the {a} is what makes you say "
             "what it is: click on the {a}. A red marker appears where you clicked; *Clear clicks* removes them.",
}

QUESTIONS: dict[str, list[dict[str, Any]]] = {
    "infer": [
        {"question": "A picture looks entirely like the class named at the left end. Where do you put the slider?",
         "options": ["At the left end", "In the middle", "At the right end"], "answer": "At the left end"},
        {"question": "A picture looks like an even mix of both classes. What do you do?",
         "options": ["Press Submit without touching anything", "Press 50/50 (or move the slider to 50), then Submit",
                     "Move the slider to the right end"],
         "answer": "Press 50/50 (or move the slider to 50), then Submit"},
        {"question": "What does the confidence slider say?",
         "options": ["How sure I am of my answer", "How much of the right class I see", "How long I looked"],
         "answer": "How sure I am of my answer"},
    ],
    "softlabel": [
        {"question": "What goes into 'Most likely class'?",
         "options": ["The class I think the picture most likely shows", "My favourite class",
                     "Always the first class in the list"],
         "answer": "The class I think the picture most likely shows"},
        {"question": "The two probabilities together may be at most ...",
         "options": ["100 %", "200 %", "any amount"], "answer": "100 %"},
    ],
    "click": [
        {"question": "Where do you click?",
         "options": ["On the object that decides what the picture shows", "Anywhere", "Always in the centre"],
         "answer": "On the object that decides what the picture shows"},
        {"question": "How many clicks may an answer have?",
         "options": ["1 to 20", "Exactly 50", "None"], "answer": "1 to 20"},
    ],
}


def default_items_per_annotator(mode: str, *, checks: int, repeats: int, available: int) -> int:
    """Regular items that, with the checks and repeats, fill :data:`TARGET_MINUTES` at the mode's pace."""
    fit = (TARGET_MINUTES * 60 - OVERHEAD_S) // SECONDS_PER_ITEM[mode] - checks - repeats
    return int(max(1, min(available, fit)))


def estimated_minutes(mode: str, n_trials: int) -> int:
    """Minutes a person needs for ``n_trials`` (items, checks, repeats and practice) plus the overhead."""
    return int(math.ceil((OVERHEAD_S + n_trials * SECONDS_PER_ITEM[mode]) / 60))


def read_text_file(path: str | os.PathLike, option: str, *, limit: int = 20_000) -> str:
    """A UTF-8 text file given on the command line (markdown), or a one-line error naming the option."""
    p = Path(path)
    if not p.is_file():
        raise StudyInputError(f"{option} {p}: no such file (pass a markdown file)", field=option)
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise StudyInputError(f"{option} {p}: not UTF-8 text (byte {err.start}); save it as UTF-8", field=option) \
            from None
    if not text.strip() or len(text) > limit:
        raise StudyInputError(f"{option} {p}: expected 1..{limit} characters of markdown, got {len(text.strip())}",
                              field=option)
    return text.strip()


def check_questions(questions: Any, source: str = "--questions") -> list[dict[str, Any]]:
    """Validate comprehension questions: a list of ``{"question": str, "options": [str, ...], "answer": str}``
    with the answer among the options (1..10 questions, 2..6 options each)."""
    if not isinstance(questions, list) or not 1 <= len(questions) <= MAX_QUESTIONS:
        raise StudyInputError(f"{source}: expected a JSON list of 1..{MAX_QUESTIONS} questions", field="questions")
    out = []
    for k, q in enumerate(questions):
        where = f"{source}, question {k + 1}"
        if not isinstance(q, dict) or set(q) != {"question", "options", "answer"}:
            raise StudyInputError(f"{where}: expected exactly the keys question, options, answer", field="questions")
        opts = q["options"]
        if not isinstance(q["question"], str) or not q["question"].strip() or len(q["question"]) > 500:
            raise StudyInputError(f"{where}, field 'question': expected 1..500 characters of text", field="questions")
        if not isinstance(opts, list) or not 2 <= len(opts) <= 6 or not all(isinstance(o, str) and o.strip()
                                                                          and len(o) <= 200 for o in opts):
            raise StudyInputError(f"{where}, field 'options': expected 2..6 non-empty texts", field="questions")
        if len(set(opts)) != len(opts):
            raise StudyInputError(f"{where}, field 'options': options must differ", field="questions")
        if q["answer"] not in opts:
            raise StudyInputError(f"{where}, field 'answer': {str(q['answer'])[:40]!r} is not one of the options",
                                  field="questions")
        out.append({"question": q["question"].strip(), "options": list(opts), "answer": q["answer"]})
    return out


def load_questions(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Comprehension questions from a JSON file (see :func:`check_questions`)."""
    text = read_text_file(path, "--questions")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise StudyInputError(f"--questions {path}, line {err.lineno}: not JSON ({err.msg})", field="questions") \
            from None
    return check_questions(data, f"--questions {path}")


def study_config(mode: str, *, title: str | None, consent: str | None, questions: list | None,
                 completion_code: str | None, redirect_url: str | None) -> dict[str, Any]:
    """What the screens show, checked, with the defaults filled in: ``title``, ``consent``, ``questions``,
    ``completion_code`` (a random 8-character code by default) and ``redirect_url`` (none by default)."""
    if title is not None and (not title.strip() or len(title) > 200):
        raise StudyInputError("--title must be 1..200 characters", field="title")
    if completion_code is not None and not (1 <= len(completion_code) <= 64 and all(
            c in _CODE_ALPHABET + string.ascii_lowercase + "_-" for c in completion_code)):
        raise StudyInputError("--completion-code must be 1..64 letters, digits, _ or -", field="completion_code")
    if redirect_url is not None and (not redirect_url.startswith(("https://", "http://")) or len(redirect_url) > 500
                                     or any(c in redirect_url for c in " \"'<>")):
        raise StudyInputError(f"--redirect-url must be an http(s):// address without spaces or quotes, got "
                              f"{redirect_url[:60]!r}", field="redirect_url")
    return {"title": title or DEFAULT_TITLE[mode], "consent": consent or DEFAULT_CONSENT,
            "questions": check_questions(questions) if questions is not None else QUESTIONS[mode],
            "completion_code": completion_code or "".join(secrets.choice(_CODE_ALPHABET) for _ in range(8)),
            "redirect_url": redirect_url}
