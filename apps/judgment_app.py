"""The human-judgment study app: a Gradio Blocks app serving one study from a gazemix study database.

Modelled on the HILL MixE suite of Collins et al., "Human-in-the-Loop Mixup" (UAI 2023), with three
elicitation modes (chosen per study): ``infer`` (mixing slider + confidence slider, endpoint classes
shown, left/right side randomised), ``softlabel`` (most and second most likely class with
probabilities, endpoints hidden among distractors) and ``click`` (click where the deciding object is,
stored in image pixels).

A crowd worker goes through consent, instructions with a worked example, practice items with feedback,
comprehension questions (a wrong answer sends them back to the instructions), the items, and an end page
with the study's completion code (and an optional link back to the recruiting site). The annotator id comes
from the URL (``?PROLIFIC_PID=...&STUDY_ID=...&SESSION_ID=...`` or ``?id=...``), from the login (``--auth``),
or is typed in. Progress lives in the database, so a person can reload, open a second tab or come back after
a server restart and continue where they left off.

Every answer is validated on the server; a rejected one is explained next to the control at fault and the
page stays usable (no error overlay). Annotators are sent only what the page shows: their current picture
(as a copy under a random name, never a path of the study's folder), the class names the page prints,
nothing else of the item (no mixer, label weight, gaze map or key), and the completion code only once every
item is answered. With ``--auth``, every request is checked against the logged-in user, so a session id
cannot be used to answer for someone else; without it, the annotator id itself is the credential (as with
Prolific ids).

Usage:
    python -m apps.judgment_app --db study.sqlite
    python -m apps.judgment_app --db study.sqlite --host 0.0.0.0 --port 7861 --auth alice:secret
"""

from __future__ import annotations

import argparse
import functools
import html
import inspect
import logging
import os
import re
import sys
import time
import zlib
from pathlib import Path
from typing import Any, Callable, Sequence

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported: nothing leaves the machine

import gradio as gr  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

from apps.judgment_args import add_arguments, check_arguments  # noqa: E402
from gazemix.study import (MAX_CLICKS, SLIDER_START, Answer, StudyInfo, StudyInputError, annotator_status,  # noqa: E402
                           check_annotator_id, check_comprehension, get_study, next_assignment, open_existing,
                           practice_feedback, practice_items, progress, record_consent, record_missing_stimulus,
                           start_annotator, submit_answer)
from gazemix.study.db import connect, transaction  # noqa: E402
from gazemix.study.protocol import EXAMPLES  # noqa: E402
from gazemix.study.store import record_event  # noqa: E402

__all__ = ["LAUNCH_OPTIONS", "build_app", "check_servable", "display_scale", "launch", "main", "parse_auth",
           "parse_click", "serve"]

LOG = logging.getLogger("gazemix.app")
DISPLAY_HEIGHT = 320
DISPLAY_MIN = 256
LAUNCH_OPTIONS: dict[str, Any] = {"footer_links": [], "show_error": False}  # no "Use via API" link for annotators
PROMPT = {"infer": "This picture blends a **{a}** and a **{b}**. How much of each do you see?",
          "softlabel": "Which classes do you see in this picture?",
          "click": "This picture blends a **{a}** and a **{b}**. Click on the object that decides what it shows."}
GENERIC_ERROR = "Something went wrong on our side; please reload the page (your answers so far are saved)."


def display_scale(h: int, w: int) -> int:
    """Integer up-scaling of a small stimulus for display (CIFAR's 32 px becomes 256 px); 1 for large ones."""
    return max(1, DISPLAY_MIN // max(h, w))


def _md(text: Any) -> str:
    """Text from the data (class names) made inert in markdown."""
    return re.sub(r"([\\`*_{}\[\]()#+\-.!<>|~])", r"\\\1", str(text))


def _load_stimulus(root: Path, rel: str, k: int) -> np.ndarray:
    """The picture as shown, up-scaled ``k`` times with nearest-neighbour pixels (``OSError`` if it is gone)."""
    with Image.open(root / rel) as im:
        img = im.convert("RGB")
    if k > 1:
        img = img.resize((img.width * k, img.height * k), Image.NEAREST)
    return np.asarray(img)


def _marked(img: np.ndarray, clicks: Sequence[Sequence[float]], k: int, box: Sequence[int] | None = None
            ) -> np.ndarray:
    """The displayed picture with a ring-and-cross marker (white outline, red) at each click (given in image
    pixels, drawn at scale ``k``) and, for practice feedback, the object's box in green."""
    pil = Image.fromarray(img)
    draw = ImageDraw.Draw(pil)
    r = max(5, min(pil.width, pil.height) // 28)
    if box is not None:
        y1, x1, y2, x2 = box
        draw.rectangle([x1 * k, y1 * k, x2 * k - 1, y2 * k - 1], outline=(0, 200, 0), width=max(2, r // 3))
    for x, y in clicks:
        cx, cy = (x + 0.5) * k - 0.5, (y + 0.5) * k - 0.5
        for colour, width in (((255, 255, 255), 5), ((230, 0, 0), 3)):
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], outline=colour, width=width)
            draw.line([cx - r - 3, cy, cx + r + 3, cy], fill=colour, width=width - 2)
            draw.line([cx, cy - r - 3, cx, cy + r + 3], fill=colour, width=width - 2)
    return np.asarray(pil)


def parse_click(index: Any, height: int, width: int, k: int) -> list[float]:
    """A click the browser reports in displayed pixels (``[x, y]`` of the shown, ``k``-times enlarged picture)
    → image pixels (pixel centres map onto pixel centres). A click off the picture or a malformed one is
    refused with a message, never moved onto the picture."""
    if not isinstance(index, (list, tuple)) or len(index) != 2 or any(
            isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v) for v in index):
        raise StudyInputError("could not read where you clicked; click on the picture again", field="clicks")
    dx, dy = (float(v) for v in index)
    if not (0 <= dx < width * k and 0 <= dy < height * k):
        raise StudyInputError("that click was outside the picture; click on the picture itself", field="clicks")
    return [round((dx + 0.5) / k - 0.5, 3), round((dy + 0.5) / k - 0.5, 3)]


def parse_auth(pairs: Sequence[str] = (), auth_file: str | os.PathLike | None = None) -> list[tuple[str, str]]:
    """``user:pass`` strings and/or a file with one ``user:pass`` per line (``#`` comments) → credentials."""
    lines = [(f"--auth {p}", p) for p in pairs]
    if auth_file is not None:
        path = Path(auth_file)
        if not path.is_file():
            raise FileNotFoundError(f"--auth-file {path} does not exist")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as err:
            raise ValueError(f"--auth-file {path}: not UTF-8 text (byte {err.start})") from None
        lines += [(f"{path}, line {k}", s.strip()) for k, s in enumerate(text.splitlines(), 1)
                  if s.strip() and not s.lstrip().startswith("#")]
    creds = []
    for where, text in lines:
        user, sep, pw = text.partition(":")
        if not sep or not pw:
            raise ValueError(f"{where}: expected user:password, got {text[:40]!r}")
        try:
            creds.append((check_annotator_id(user), pw))
        except StudyInputError as err:
            raise ValueError(f"{where}: {err}") from None
    return creds


def check_servable(db: Path, info: StudyInfo) -> None:
    """Refuse to serve a study whose pictures are not all there (an H-Mix import without ``--images``, a moved
    or deleted media folder): answers on grey squares are worth nothing."""
    con = connect(db)
    try:
        rows = con.execute("SELECT key, image_path FROM items WHERE study_id = ? UNION ALL "
                           "SELECT role || ' ' || position, image_path FROM practice WHERE study_id = ?",
                           (info.id, info.id)).fetchall()
    finally:
        con.close()
    no_path = [r["key"] for r in rows if not r["image_path"]]
    if no_path:
        raise StudyInputError(f"study {info.name!r}: {len(no_path)} of {len(rows)} items have no picture (e.g. "
                              f"{no_path[0]}); it was imported without its stimuli. Import it again with --images "
                              "FOLDER (e.g. `gazemix humans import-hmix DIR --images FOLDER --name NEW`)", field="db")
    gone = [r["image_path"] for r in rows if not (db.parent / r["image_path"]).is_file()]
    if gone:
        raise StudyInputError(f"study {info.name!r}: {len(gone)} of {len(rows)} picture files are missing (e.g. "
                              f"{db.parent / gone[0]}); restore the study's media folder beside {db}", field="db")


class StudyApp:
    """One study's app: the layout (components as attributes), page builders, request guards, event handlers and
    their wiring, over the study database ``db_path``; :func:`build_app` returns its :attr:`blocks`."""

    def __init__(self, db_path: str | os.PathLike, study: str | None, require_login: bool) -> None:
        self.db = open_existing(db_path, writable=True)
        self.info = get_study(self.db, study)
        check_servable(self.db, self.info)
        self.require_login = require_login
        self.root, self.mode = self.db.parent, self.info.mode
        self.practice = practice_items(self.db, self.info)
        self.example = (practice_items(self.db, self.info, "example") or [None])[0]
        self.questions = self.info.questions
        self.cfg = self.info.config
        with gr.Blocks(title=self.info.title) as self.blocks:
            self.sess = gr.State(None)
            gr.Markdown(f"# {html.escape(self.info.title)}", elem_id="title")
            self._entry_pages()
            self._task_page()
            self._end_page()
            self._collect_outputs()
            self._wire()
        self.blocks.queue(default_concurrency_limit=8)

    # ------------------------------------------------------------------ layout
    def _entry_pages(self) -> None:
        """The login, consent, instructions (with the worked example) and comprehension question pages."""
        info = self.info
        with gr.Column(visible=not self.require_login, elem_id="login") as self.login_col:
            self.annotator = gr.Textbox(label="Your participant id", placeholder="e.g. your Prolific id",
                                        max_length=64, elem_id="annotator")
            self.start_btn = gr.Button("Start / resume", elem_id="start", variant="primary")
            self.annotator_msg = gr.Markdown(elem_id="annotator-msg")
        with gr.Column(visible=False, elem_id="consent") as self.consent_col:
            minutes = self.cfg.get("minutes")
            gr.Markdown(("## Consent\n" + (f"This study takes about **{minutes} minutes**.\n\n" if minutes else "")
                         + info.consent), elem_id="consent-text")
            self.agree = gr.Checkbox(label="I have read the above and agree to take part", value=False,
                                     elem_id="agree")
            self.consent_btn = gr.Button("Continue", elem_id="consent-continue", variant="primary")
            self.consent_msg = gr.Markdown(elem_id="consent-msg")
        with gr.Column(visible=False, elem_id="instructions") as self.instr_col:
            self.instr_msg = gr.Markdown(elem_id="instructions-msg")
            gr.Markdown("## Instructions\n" + info.instructions, elem_id="instructions-text")
            self.example_img = gr.Image(interactive=False, show_label=False, height=240, type="numpy", format="png",
                                        elem_id="example", buttons=[], visible=self.example is not None)
            self.example_md = gr.Markdown(elem_id="example-text")
            self.instr_btn = gr.Button("Continue", elem_id="instructions-continue", variant="primary")
        with gr.Column(visible=False, elem_id="quiz") as self.quiz_col:
            gr.Markdown("## A few questions\nAnswer them all to start the study.")
            self.radios = [gr.Radio(q["options"], label=f"{k + 1}. {q['question']}", elem_id=f"q{k}")
                           for k, q in enumerate(self.questions)]
            self.quiz_btn = gr.Button("Check my answers", elem_id="quiz-submit", variant="primary")
            self.quiz_msg = gr.Markdown(elem_id="quiz-msg")

    def _task_page(self) -> None:
        """The page of a (practice) item: progress, picture, prompt, the mode's controls, Submit / Next, status."""
        with gr.Column(visible=False, elem_id="task") as self.task_col:
            self.progress_html = gr.HTML(elem_id="progress")
            self.banner = gr.Markdown(elem_id="banner")
            with gr.Row(equal_height=False):
                self.image = gr.Image(interactive=False, show_label=False, height=DISPLAY_HEIGHT, type="numpy",
                                      format="png", elem_id="stimulus", buttons=[], min_width=260)
                with gr.Column(min_width=260):
                    self.prompt_md = gr.Markdown(elem_id="prompt")
                    self.controls = self._mode_controls()
                    self.feedback_md = gr.Markdown(elem_id="feedback")
                    self.submit_btn = gr.Button("Submit", variant="primary", elem_id="submit")
                    self.next_btn = gr.Button("Next", variant="primary", elem_id="next", visible=False)
                    self.status_md = gr.Markdown(elem_id="status")

    def _mode_controls(self) -> dict[str, Any]:
        """The answer controls of the study's mode by name, each ``*_msg`` the place for its messages."""
        if self.mode == "infer":
            return {"ends": gr.HTML(elem_id="mix-ends"),
                    "mix": gr.Slider(0, 100, value=SLIDER_START, step=1, label="Mixing",
                                     info="Move the slider to your answer (it starts in the middle). "
                                          "If the picture looks evenly mixed, press 50/50.", elem_id="mix"),
                    "even": gr.Button("50/50", elem_id="even", size="sm"),
                    "mix_msg": gr.Markdown(elem_id="mix-msg"),
                    "conf": gr.Slider(0, 100, value=SLIDER_START, step=1,
                                      label="Confidence: 0 = not at all sure, 100 = completely sure", elem_id="conf"),
                    "conf_msg": gr.Markdown(elem_id="conf-msg")}
        if self.mode == "softlabel":
            return {"choice1": gr.Radio([], label="Most likely class", elem_id="choice1"),
                    "prob1": gr.Slider(0, 100, value=SLIDER_START, step=1, label="its probability (%)",
                                       elem_id="prob1"),
                    "choice1_msg": gr.Markdown(elem_id="choice1-msg"),
                    "choice2": gr.Radio(["None"], value="None", label="Second most likely class", elem_id="choice2"),
                    "prob2": gr.Slider(0, 100, value=0, step=1, label="its probability (%)", elem_id="prob2"),
                    "choice2_msg": gr.Markdown(elem_id="choice2-msg")}
        return {"clicks": gr.Markdown("No clicks yet.", elem_id="clicks"),
                "clear": gr.Button("Clear clicks", elem_id="clear", size="sm"),
                "clicks_msg": gr.Markdown(elem_id="clicks-msg")}

    def _end_page(self) -> None:
        """The end page: thanks, the completion code and the optional way back to the recruiting site."""
        with gr.Column(visible=False, elem_id="end") as self.end_col:
            self.end_md = gr.Markdown(elem_id="end-text")
            self.redirect_btn = gr.Button("Return to the recruiting site", elem_id="redirect", visible=False,
                                          variant="primary")

    def _collect_outputs(self) -> None:
        """The pages, the message fields (by the input field they explain) and the outputs of every handler."""
        controls = self.controls
        self.groups = {"login": self.login_col, "consent": self.consent_col, "instructions": self.instr_col,
                       "quiz": self.quiz_col, "task": self.task_col, "end": self.end_col}
        self.page_msgs = [self.annotator_msg, self.consent_msg, self.instr_msg, self.quiz_msg, self.status_md]
        self.messages = self.page_msgs + [self.feedback_md] + [c for key, c in controls.items() if key.endswith("_msg")]
        self.field_msg = {"annotator": self.annotator_msg, "consent": self.consent_msg, "questions": self.quiz_msg}
        if self.mode == "infer":
            self.field_msg.update(slider=controls["mix_msg"], confidence=controls["conf_msg"])
        elif self.mode == "softlabel":
            self.field_msg.update(choice1=controls["choice1_msg"], prob1=controls["choice1_msg"],
                                  choice2=controls["choice2_msg"], prob2=controls["choice2_msg"])
        else:
            self.field_msg.update(clicks=controls["clicks_msg"])
        outputs = ([self.sess, self.annotator, self.agree, self.example_img, self.example_md, self.progress_html,
                    self.banner, self.image, self.prompt_md, self.submit_btn, self.next_btn, self.end_md,
                    self.redirect_btn] + list(self.groups.values()) + self.radios + self.messages
                   + [c for key, c in controls.items() if not key.endswith("_msg") and key != "even"])
        self.outputs = list(dict.fromkeys(outputs))
        # what an API client receives, in order (gradio_client leaves out State, layout and buttons)
        self.blocks.output_ids = [c.elem_id for c in self.outputs if not getattr(c, "skip_api", False)]

    # ------------------------------------------------------------------ pages
    def page(self, name: str) -> dict:
        """Show the page ``name``, hide the others."""
        return {g: gr.update(visible=(key == name)) for key, g in self.groups.items()}

    def cleared(self) -> dict:
        """Every message emptied."""
        return {m: "" for m in self.messages}

    def inline(self, err: StudyInputError) -> dict:
        """The message next to the control at fault, or on whichever page is showing."""
        targets = [self.field_msg[err.field]] if err.field in self.field_msg else self.page_msgs
        return {**self.cleared(), **{t: f"⚠️ {err}" for t in targets}}

    def consent_page(self, state: dict) -> dict:
        """The consent page, box unticked."""
        return {**self.page("consent"), self.sess: {**state, "stage": "consent"}, self.agree: False}

    def instructions_page(self, state: dict, note: str = "") -> dict:
        """The instructions with the worked example (hidden when its picture is gone) and ``note`` on top."""
        out = {**self.page("instructions"), self.sess: {**state, "stage": "instructions"}, self.instr_msg: note}
        example = self.example
        if example is not None:
            a, b = example["class1"], example["class2"]
            try:
                out[self.example_img] = _load_stimulus(self.root, example["image_path"],
                                                       display_scale(example["height"], example["width"]))
            except OSError:
                LOG.warning("worked example picture %s is missing", self.root / example["image_path"])
                out[self.example_img] = gr.update(visible=False)
            out[self.example_md] = EXAMPLES[self.mode].format(a=_md(a), b=_md(b))
        return out

    def quiz_page(self, state: dict) -> dict:
        """The comprehension questions, unanswered."""
        return {**self.page("quiz"), self.sess: {**state, "stage": "quiz"},
                **{r: gr.update(value=None) for r in self.radios}}

    def reset_controls(self, left: str, right: str, choices: Sequence[str]) -> dict:
        """The mode's controls back at their start for an item with these classes (left/right or choices)."""
        controls = self.controls
        out: dict = {self.submit_btn: gr.update(visible=True), self.next_btn: gr.update(visible=False),
                     self.feedback_md: ""}
        if self.mode == "infer":
            out[controls["ends"]] = (
                "<div style='display:flex;justify-content:space-between;font-weight:600'>"
                f"<span id='left-end'>← 100 % {html.escape(left)}</span><span>50/50</span>"
                f"<span id='right-end'>100 % {html.escape(right)} →</span></div>")
            out[controls["mix"]] = gr.update(value=SLIDER_START, label=f"Mixing: 0 = all {left}, 100 = all {right}")
            out[controls["conf"]] = gr.update(value=SLIDER_START)
        elif self.mode == "softlabel":
            out[controls["choice1"]] = gr.update(choices=list(choices), value=None)
            out[controls["choice2"]] = gr.update(choices=["None"] + list(choices), value="None")
            out[controls["prob1"]] = gr.update(value=SLIDER_START)
            out[controls["prob2"]] = gr.update(value=0)
        else:
            out[controls["clicks"]] = "No clicks yet."
        return out

    @staticmethod
    def fresh(state: dict, **kw: Any) -> dict:
        """The session for a newly shown item: clock restarted, nothing touched, clicked or answered yet."""
        return {**state, "shown_at": time.monotonic(), "mix_touched": False, "conf_touched": False, "clicks": [],
                "answered": False, **kw}

    def practice_page(self, state: dict, k: int) -> dict:
        """Practice item ``k`` (one whose picture is gone is skipped); after the last, the questions or items."""
        practice = self.practice
        while k < len(practice):
            it = practice[k]
            scale = display_scale(it["height"], it["width"])
            try:
                img = _load_stimulus(self.root, it["image_path"], scale)
            except OSError:
                LOG.warning("practice picture %s is missing; skipped", self.root / it["image_path"])
                k += 1
                continue
            rng = np.random.default_rng([int(self.cfg.get("seed", 0)), zlib.crc32(state["ext"].encode()), 100 + k])
            left1 = bool(rng.random() < 0.5)
            a, b = (it["class1"], it["class2"]) if left1 else (it["class2"], it["class1"])
            choices = [it["choices"][j] for j in rng.permutation(len(it["choices"]))]
            st = self.fresh(state, stage="practice", practice_k=k, left1=left1, h=it["height"], w=it["width"],
                            scale=scale, choices=choices, answered=False)
            return {**self.page("task"), **self.reset_controls(a, b, choices), self.sess: st, self.image: img,
                    self.progress_html: "", self.prompt_md: PROMPT[self.mode].format(a=_md(a), b=_md(b)),
                    self.banner: f"**Practice {k + 1} of {len(practice)}** — not part of the study; you will see "
                                 "feedback after each answer."}
        return self.quiz_page(state) if self.questions else self.item_page(state)

    def item_page(self, state: dict, note: str = "") -> dict:
        """The annotator's next item (one whose picture vanished is skipped and recorded), or the end page."""
        ann = state["ann"]
        while True:
            asg = next_assignment(self.db, ann)
            prog = progress(self.db, ann)
            if asg is None:
                return self.end_page(state, prog.total)
            it = asg.item
            scale = display_scale(it["height"], it["width"])
            try:
                img = _load_stimulus(self.root, it["image_path"], scale)
                break
            except OSError:  # the file vanished while serving: skip it, tell the team, never the path
                LOG.warning("stimulus %s of item %s is missing; annotator %s skips it", self.root / it["image_path"],
                            it["id"], state["ext"])
                record_missing_stimulus(self.db, self.info, ann, asg.position, int(it["id"]))
                note = "One picture could not be loaded and was skipped (the study team can see this)."
        bar = (f"<progress value='{prog.done}' max='{prog.total}' style='width:100%'></progress>"
               f"<div>Item {prog.done + 1} of {prog.total} — <b id='progress-text'>{prog}</b> done</div>")
        st = self.fresh(state, stage="items", pos=asg.position, item_id=int(it["id"]), h=it["height"], w=it["width"],
                        scale=scale)
        return {**self.page("task"), **self.cleared(),
                **self.reset_controls(asg.left_class, asg.right_class, asg.choice_order),
                self.sess: st, self.image: img, self.progress_html: bar, self.banner: "",
                self.prompt_md: PROMPT[self.mode].format(a=_md(asg.left_class), b=_md(asg.right_class)),
                self.status_md: note}

    def end_page(self, state: dict, total: int) -> dict:
        """Thanks, the completion code (if any) and the redirect button (if the study has a redirect URL)."""
        cfg = self.cfg
        code = cfg.get("completion_code")
        text = (f"## Thank you!\nYou have answered all {total} items.\n\n"
                + (f"Your completion code is **<code id='code'>{html.escape(str(code))}</code>**. " if code else "")
                + ("Press the button below to return to the recruiting site." if cfg.get("redirect_url")
                   else "You can close this tab."))
        return {**self.page("end"), self.sess: {**state, "stage": "done"}, self.end_md: text,
                self.redirect_btn: gr.update(visible=bool(cfg.get("redirect_url")), link=cfg.get("redirect_url"))}

    def route(self, state: dict, note: str = "") -> dict:
        """Where an annotator (re)starts: consent, instructions until qualified, then the next item."""
        status = annotator_status(self.db, self.info, state["ann"])
        if not status.consented:
            return self.consent_page(state)
        if not status.qualified:
            return self.instructions_page(state, note)
        return self.item_page(state, note)

    # ------------------------------------------------------------------ guards
    def owner(self, state: dict | None, request: gr.Request | None, stages: Sequence[str]) -> dict:
        """The session, if there is one, it belongs to the logged-in user and its page is one of ``stages``."""
        if not state:
            raise StudyInputError("enter your participant id and press Start first", field="annotator")
        if self.require_login and getattr(request, "username", None) != state["ext"]:
            raise StudyInputError("this page belongs to another login; reload the page", field="session")
        if state.get("stage") not in stages:
            raise StudyInputError("this page is out of date; reload it to continue where you left off",
                                  field="session")
        return state

    def guarded(self, fn: Callable[..., dict]) -> Callable[..., dict]:
        """Run a handler; a refused request is shown inline, an unexpected error logged (never shown)."""
        def run(*args: Any) -> dict:
            try:
                return fn(*args)
            except StudyInputError as err:
                return self.inline(err)
            except Exception:  # noqa: BLE001 - a bug: log it with the traceback, tell the person plainly
                LOG.exception("handler %s failed", fn.__name__)
                return {**self.cleared(), **{m: GENERIC_ERROR for m in self.page_msgs}}
        return functools.wraps(fn)(run)

    @staticmethod
    def with_values(fn: Callable[..., dict], n: int) -> Callable[..., dict]:
        """``fn(values, state, request)`` as a handler of ``n`` component values, the state and the request."""
        def run(*args: Any) -> dict:
            *values, state, request = args
            return fn(values, state, request)
        kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
        run.__signature__ = inspect.Signature(
            [inspect.Parameter(f"value{k}", kind) for k in range(n)] + [inspect.Parameter("state", kind),
                                                                     inspect.Parameter("request", kind)])
        run.__annotations__ = {"request": gr.Request}
        run.__name__ = fn.__name__
        return run

    def current(self, state: dict) -> dict | None:
        """The stale-tab check: another tab may have answered this item already (then: the next page)."""
        if state["stage"] != "items":
            return None
        asg = next_assignment(self.db, state["ann"])
        if asg is None or asg.position != state["pos"]:
            return self.item_page(state, "This item had already been answered in another tab; here is your next "
                                         "item.")
        return None

    def clicks_state(self, state: dict | None, request: gr.Request) -> tuple[dict, dict | None]:
        """The session when its clicks may change now, and the page to show instead when the tab is stale."""
        state = self.owner(state, request, ("items", "practice"))
        stale = self.current(state)
        if stale is None and state["stage"] == "practice" and state["answered"]:
            raise StudyInputError("press Next for the next practice item", field="clicks")
        return state, stale

    # ------------------------------------------------------------------ handlers
    def begin(self, external: str, request: gr.Request | None, url_params: dict | None = None) -> dict:
        """Enrol or resume the annotator ``external`` and show where they stand."""
        session = getattr(request, "session_hash", None)
        ann = start_annotator(self.db, self.info, external, url_params=url_params, session=session)
        return {**self.cleared(), **self.route({"ann": ann, "ext": external, "stage": "start"}),
                self.annotator: gr.update(value=external)}

    def start(self, typed: str, request: gr.Request) -> dict:
        """Start / resume with the typed id (the login with ``require_login``)."""
        external = check_annotator_id(request.username if self.require_login else typed)
        return self.begin(external, request)

    def on_load(self, request: gr.Request) -> dict:
        """Page load: begin at once for a logged-in user or an id in the URL; otherwise the login page."""
        if self.require_login and getattr(request, "username", None):
            return self.begin(check_annotator_id(request.username), request)
        params = dict(getattr(request, "query_params", None) or {})
        external = params.get("PROLIFIC_PID") or params.get("id")
        if not external:
            return {}
        try:
            return self.begin(check_annotator_id(external), request, url_params=params)
        except StudyInputError as err:
            return {**self.page("login"), **self.inline(err)}

    def consent(self, accepted: bool, state: dict | None, request: gr.Request) -> dict:
        """Record the consent (refused unless ticked), then the instructions."""
        state = self.owner(state, request, ("consent",))
        record_consent(self.db, self.info, state["ann"], accepted, session=getattr(request, "session_hash", None))
        return {**self.cleared(), **self.instructions_page(state)}

    def instructions_done(self, state: dict | None, request: gr.Request) -> dict:
        """After the instructions: practice (once), then the questions (if any) or the items."""
        state = self.owner(state, request, ("instructions",))
        if self.practice and not state.get("practised"):
            return {**self.cleared(), **self.practice_page(state, 0)}
        return {**self.cleared(), **(self.quiz_page(state) if self.questions else self.item_page(state))}

    def practice_next(self, state: dict | None, request: gr.Request) -> dict:
        """The next practice item, once this one is answered."""
        state = self.owner(state, request, ("practice",))
        if not state.get("answered"):
            raise StudyInputError("answer this practice item first", field="session")
        k = state["practice_k"] + 1
        if k >= len(self.practice):
            state = {**state, "practised": True}
        return {**self.cleared(), **self.practice_page(state, k)}

    def quiz(self, answers: list, state: dict | None, request: gr.Request) -> dict:
        """Check the comprehension answers: the items when all are right, else back to the instructions."""
        state = self.owner(state, request, ("quiz",))
        wrong = check_comprehension(self.db, self.info, state["ann"], list(answers),
                                    session=getattr(request, "session_hash", None))
        if wrong:
            nums = ", ".join(str(k + 1) for k in wrong)
            return {**self.cleared(), **self.instructions_page(
                state, f"⚠️ {len(wrong)} of {len(self.questions)} answers were not right (question {nums}). Please "
                       "read the instructions again, then answer the questions again.")}
        return {**self.cleared(), **self.item_page(state)}

    @staticmethod
    def touch(key: str) -> Callable[..., Any]:
        """A handler marking the slider ``key`` as moved on an item or practice page."""
        def fn(state: dict | None) -> Any:
            if state and state.get("stage") in ("items", "practice"):
                return {**state, key: True}
            return gr.skip()
        return fn

    def even(self, state: dict | None, request: gr.Request) -> dict:
        """The 50/50 button: the mixing slider to the middle, counted as moved."""
        state = self.owner(state, request, ("items", "practice"))
        return {self.sess: {**state, "mix_touched": True}, self.controls["mix"]: gr.update(value=SLIDER_START),
                self.controls["mix_msg"]: "50/50 set."}

    def shown(self, state: dict, clicks: Sequence[Sequence[float]], box: Sequence[int] | None = None) -> np.ndarray:
        """The current (practice) picture with ``clicks`` (and the practice answer's ``box``) marked."""
        if state["stage"] == "practice":
            rel = self.practice[state["practice_k"]]["image_path"]
        else:
            rel = next_assignment(self.db, state["ann"]).item["image_path"]
        return _marked(_load_stimulus(self.root, rel, state["scale"]), clicks, state["scale"], box)

    def click(self, state: dict | None, request: gr.Request, evt: gr.EventData) -> dict:
        """A click on the picture, checked and added (at most ``MAX_CLICKS``)."""
        state, stale = self.clicks_state(state, request)
        if stale is not None:
            return stale
        data = getattr(evt, "_data", None)  # the raw event data: a malformed one gets our message, not a KeyError
        index = data.get("index") if isinstance(data, dict) else None
        pt = parse_click(index, state["h"], state["w"], state["scale"])
        if len(state["clicks"]) >= MAX_CLICKS:
            raise StudyInputError(f"at most {MAX_CLICKS} clicks per picture; press Clear clicks to start over",
                                  field="clicks")
        clicks = state["clicks"] + [pt]
        text = f"{len(clicks)} click(s): " + ", ".join(f"({x:.0f}, {y:.0f})" for x, y in clicks)
        return {**self.cleared(), self.sess: {**state, "clicks": clicks}, self.image: self.shown(state, clicks),
                self.controls["clicks"]: text}

    def clear(self, state: dict | None, request: gr.Request) -> dict:
        """Clear clicks: the picture unmarked."""
        state, stale = self.clicks_state(state, request)
        if stale is not None:
            return stale
        return {**self.cleared(), self.sess: {**state, "clicks": []}, self.image: self.shown(state, []),
                self.controls["clicks"]: "No clicks yet."}

    def submit(self, values: list, state: dict | None, request: gr.Request) -> dict:
        """An answer: feedback on a practice item; stored (unless the tab is stale) and the next item otherwise."""
        state = self.owner(state, request, ("items", "practice"))
        mode = self.mode
        if mode == "infer":
            answer = Answer(slider=values[0], confidence=values[1], slider_touched=state["mix_touched"],
                            confidence_touched=state["conf_touched"])
        elif mode == "softlabel":
            answer = Answer(choice1=values[0], prob1=values[1], choice2=values[2], prob2=values[3])
        else:
            answer = Answer(clicks=state["clicks"])
        session = getattr(request, "session_hash", None)
        if state["stage"] == "practice":
            if state.get("answered"):
                raise StudyInputError("press Next for the next practice item", field="session")
            it = self.practice[state["practice_k"]]
            right, text = practice_feedback(mode, {**it, "choices": state["choices"]}, answer,
                                            left_is_image1=state["left1"])
            self._log_practice(it, answer, right, state, session)
            out = {**self.cleared(), self.sess: {**state, "answered": True},
                   self.feedback_md: ("**Right.** " if right else "**Not quite.** ") + text,
                   self.submit_btn: gr.update(visible=False), self.next_btn: gr.update(visible=True)}
            if mode == "click" and it["answer"].get("box") is not None:
                out[self.image] = self.shown(state, state["clicks"], it["answer"]["box"])
            return out
        stale = self.current(state)
        if stale is not None:
            return stale
        stored = submit_answer(self.db, self.info, state["ann"], state["pos"], state["item_id"], answer,
                               rt_ms=(time.monotonic() - state["shown_at"]) * 1000.0, session=session)
        return self.item_page(state, "Saved." if stored else "This item was already saved (duplicate ignored).")

    def _log_practice(self, it: dict, answer: Answer, right: bool, state: dict, session: str | None) -> None:
        """Record a practice answer and whether it was right (an event; practice is not a response)."""
        with transaction(self.db) as con:
            record_event(con, state["ann"], "practice", {"position": it["position"], "right": right,
                                                          "answer": {k: v for k, v in vars(answer).items()}},
                         session)

    # ------------------------------------------------------------------ events
    def _wire(self) -> None:
        """Connect the page load, buttons, sliders and picture to their (guarded) handlers."""
        sess, outputs, controls, guarded = self.sess, self.outputs, self.controls, self.guarded
        self.blocks.load(guarded(self.on_load), None, outputs, api_name=False, show_progress="hidden")
        self.start_btn.click(guarded(self.start), [self.annotator], outputs, api_name="start")
        self.annotator.submit(guarded(self.start), [self.annotator], outputs, api_name=False)
        self.consent_btn.click(guarded(self.consent), [self.agree, sess], outputs, api_name="consent")
        self.instr_btn.click(guarded(self.instructions_done), [sess], outputs, api_name="instructions_done")
        self.next_btn.click(guarded(self.practice_next), [sess], outputs, api_name="practice_next")
        self.quiz_btn.click(guarded(self.with_values(self.quiz, len(self.radios))), self.radios + [sess], outputs,
                            api_name="quiz")
        if self.mode == "infer":
            for slider, key, api in ((controls["mix"], "mix_touched", "touch_mix"),
                                     (controls["conf"], "conf_touched", "touch_conf")):
                slider.input(self.touch(key), [sess], [sess], api_name=api, show_progress="hidden")
                slider.release(self.touch(key), [sess], [sess], api_name=False, show_progress="hidden")
            controls["even"].click(guarded(self.even), [sess], outputs, api_name="even", show_progress="hidden")
            submit_inputs = [controls["mix"], controls["conf"]]
        elif self.mode == "softlabel":
            submit_inputs = [controls["choice1"], controls["prob1"], controls["choice2"], controls["prob2"]]
        else:
            self.image.select(guarded(self.click), [sess], outputs, api_name="click", show_progress="hidden")
            controls["clear"].click(guarded(self.clear), [sess], outputs, api_name="clear_clicks")
            submit_inputs = []
        self.submit_btn.click(guarded(self.with_values(self.submit, len(submit_inputs))), submit_inputs + [sess],
                              outputs, api_name="submit", trigger_mode="once")


def build_app(db_path: str | os.PathLike, *, study: str | None = None, require_login: bool = False) -> gr.Blocks:
    """The study app for ``study`` (the only one in ``db_path`` by default); launch it with :func:`serve`.

    Args:
        require_login: the annotator id is the logged-in user (launch with ``auth=``); no id box is shown.
    """
    return StudyApp(db_path, study, require_login).blocks


def serve(demo: gr.Blocks, *, host: str = "127.0.0.1", port: int | None = None,
          auth: Sequence[tuple[str, str]] | None = None, block: bool = True) -> str:
    """Launch a built app with the study's launch options (no API link, no error details); returns its URL."""
    _, url, _ = demo.launch(server_name=host, server_port=port, auth=list(auth) if auth else None,
                            prevent_thread_lock=not block, quiet=not block, **LAUNCH_OPTIONS)
    return url


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m apps.judgment_app --db study.sqlite [--study NAME] [--host --port --auth U:P | --auth-file F]``."""
    p = argparse.ArgumentParser(prog="python -m apps.judgment_app", description=__doc__.split("\n\n")[0])
    add_arguments(p)
    args = p.parse_args(argv)
    try:
        return launch(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"{p.prog}: error: {err}", file=sys.stderr)
        return 2


def launch(args: argparse.Namespace) -> int:
    """Serve the study named by parsed ``args`` until interrupted (login required when credentials are given)."""
    check_arguments(args)
    creds = parse_auth(args.auth, args.auth_file)
    demo = build_app(args.db, study=args.study, require_login=bool(creds))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        serve(demo, host=args.host, port=args.port, auth=creds)
    except OSError as err:
        raise ValueError(f"--host {args.host} --port {args.port}: cannot listen there ({err}); pass another --port")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
