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


def build_app(db_path: str | os.PathLike, *, study: str | None = None, require_login: bool = False) -> gr.Blocks:
    """The study app for ``study`` (the only one in ``db_path`` by default); launch it with :func:`serve`.

    Args:
        require_login: the annotator id is the logged-in user (launch with ``auth=``); no id box is shown.
    """
    db = open_existing(db_path, writable=True)
    info = get_study(db, study)
    check_servable(db, info)
    root, mode = db.parent, info.mode
    practice = practice_items(db, info)
    example = (practice_items(db, info, "example") or [None])[0]
    questions = info.questions
    cfg = info.config

    # ------------------------------------------------------------------ layout
    with gr.Blocks(title=info.title) as demo:
        sess = gr.State(None)
        gr.Markdown(f"# {html.escape(info.title)}", elem_id="title")
        with gr.Column(visible=not require_login, elem_id="login") as login_col:
            annotator = gr.Textbox(label="Your participant id", placeholder="e.g. your Prolific id", max_length=64,
                                   elem_id="annotator")
            start_btn = gr.Button("Start / resume", elem_id="start", variant="primary")
            annotator_msg = gr.Markdown(elem_id="annotator-msg")
        with gr.Column(visible=False, elem_id="consent") as consent_col:
            minutes = cfg.get("minutes")
            gr.Markdown(("## Consent\n" + (f"This study takes about **{minutes} minutes**.\n\n" if minutes else "")
                         + info.consent), elem_id="consent-text")
            agree = gr.Checkbox(label="I have read the above and agree to take part", value=False, elem_id="agree")
            consent_btn = gr.Button("Continue", elem_id="consent-continue", variant="primary")
            consent_msg = gr.Markdown(elem_id="consent-msg")
        with gr.Column(visible=False, elem_id="instructions") as instr_col:
            instr_msg = gr.Markdown(elem_id="instructions-msg")
            gr.Markdown("## Instructions\n" + info.instructions, elem_id="instructions-text")
            example_img = gr.Image(interactive=False, show_label=False, height=240, type="numpy", format="png",
                                   elem_id="example", buttons=[], visible=example is not None)
            example_md = gr.Markdown(elem_id="example-text")
            instr_btn = gr.Button("Continue", elem_id="instructions-continue", variant="primary")
        with gr.Column(visible=False, elem_id="quiz") as quiz_col:
            gr.Markdown("## A few questions\nAnswer them all to start the study.")
            radios = [gr.Radio(q["options"], label=f"{k + 1}. {q['question']}", elem_id=f"q{k}")
                      for k, q in enumerate(questions)]
            quiz_btn = gr.Button("Check my answers", elem_id="quiz-submit", variant="primary")
            quiz_msg = gr.Markdown(elem_id="quiz-msg")
        with gr.Column(visible=False, elem_id="task") as task_col:
            progress_html = gr.HTML(elem_id="progress")
            banner = gr.Markdown(elem_id="banner")
            with gr.Row(equal_height=False):
                image = gr.Image(interactive=False, show_label=False, height=DISPLAY_HEIGHT, type="numpy",
                                 format="png", elem_id="stimulus", buttons=[], min_width=260)
                with gr.Column(min_width=260):
                    prompt_md = gr.Markdown(elem_id="prompt")
                    controls: dict[str, Any] = {}
                    if mode == "infer":
                        controls["ends"] = gr.HTML(elem_id="mix-ends")
                        controls["mix"] = gr.Slider(0, 100, value=SLIDER_START, step=1, label="Mixing",
                                                    info="Move the slider to your answer (it starts in the middle). "
                                                         "If the picture looks evenly mixed, press 50/50.",
                                                    elem_id="mix")
                        controls["even"] = gr.Button("50/50", elem_id="even", size="sm")
                        controls["mix_msg"] = gr.Markdown(elem_id="mix-msg")
                        controls["conf"] = gr.Slider(0, 100, value=SLIDER_START, step=1,
                                                     label="Confidence: 0 = not at all sure, 100 = completely sure",
                                                     elem_id="conf")
                        controls["conf_msg"] = gr.Markdown(elem_id="conf-msg")
                    elif mode == "softlabel":
                        controls["choice1"] = gr.Radio([], label="Most likely class", elem_id="choice1")
                        controls["prob1"] = gr.Slider(0, 100, value=SLIDER_START, step=1, label="its probability (%)",
                                                      elem_id="prob1")
                        controls["choice1_msg"] = gr.Markdown(elem_id="choice1-msg")
                        controls["choice2"] = gr.Radio(["None"], value="None", label="Second most likely class",
                                                       elem_id="choice2")
                        controls["prob2"] = gr.Slider(0, 100, value=0, step=1, label="its probability (%)",
                                                      elem_id="prob2")
                        controls["choice2_msg"] = gr.Markdown(elem_id="choice2-msg")
                    else:
                        controls["clicks"] = gr.Markdown("No clicks yet.", elem_id="clicks")
                        controls["clear"] = gr.Button("Clear clicks", elem_id="clear", size="sm")
                        controls["clicks_msg"] = gr.Markdown(elem_id="clicks-msg")
                    feedback_md = gr.Markdown(elem_id="feedback")
                    submit_btn = gr.Button("Submit", variant="primary", elem_id="submit")
                    next_btn = gr.Button("Next", variant="primary", elem_id="next", visible=False)
                    status_md = gr.Markdown(elem_id="status")
        with gr.Column(visible=False, elem_id="end") as end_col:
            end_md = gr.Markdown(elem_id="end-text")
            redirect_btn = gr.Button("Return to the recruiting site", elem_id="redirect", visible=False,
                                     variant="primary")

        groups = {"login": login_col, "consent": consent_col, "instructions": instr_col, "quiz": quiz_col,
                  "task": task_col, "end": end_col}
        messages = [annotator_msg, consent_msg, instr_msg, quiz_msg, status_md, feedback_md] + [
            c for key, c in controls.items() if key.endswith("_msg")]
        field_msg = {"annotator": annotator_msg, "consent": consent_msg, "questions": quiz_msg}
        if mode == "infer":
            field_msg.update(slider=controls["mix_msg"], confidence=controls["conf_msg"])
        elif mode == "softlabel":
            field_msg.update(choice1=controls["choice1_msg"], prob1=controls["choice1_msg"],
                             choice2=controls["choice2_msg"], prob2=controls["choice2_msg"])
        else:
            field_msg.update(clicks=controls["clicks_msg"])
        outputs = ([sess, annotator, agree, example_img, example_md, progress_html, banner, image, prompt_md,
                    submit_btn, next_btn, end_md, redirect_btn] + list(groups.values()) + radios + messages
                   + [c for key, c in controls.items() if not key.endswith("_msg") and key != "even"])
        outputs = list(dict.fromkeys(outputs))
        # what an API client receives, in order (gradio_client leaves out State, layout and buttons)
        demo.output_ids = [c.elem_id for c in outputs if not getattr(c, "skip_api", False)]

        # ------------------------------------------------------------------ pages
        def page(name: str) -> dict:
            return {g: gr.update(visible=(key == name)) for key, g in groups.items()}

        def cleared() -> dict:
            return {m: "" for m in messages}

        page_msgs = [annotator_msg, consent_msg, instr_msg, quiz_msg, status_md]

        def inline(err: StudyInputError) -> dict:
            """The message next to the control at fault, or on whichever page is showing."""
            targets = [field_msg[err.field]] if err.field in field_msg else page_msgs
            return {**cleared(), **{t: f"⚠️ {err}" for t in targets}}

        def consent_page(state: dict) -> dict:
            return {**page("consent"), sess: {**state, "stage": "consent"}, agree: False}

        def instructions_page(state: dict, note: str = "") -> dict:
            out = {**page("instructions"), sess: {**state, "stage": "instructions"}, instr_msg: note}
            if example is not None:
                a, b = example["class1"], example["class2"]
                try:
                    out[example_img] = _load_stimulus(root, example["image_path"],
                                                      display_scale(example["height"], example["width"]))
                except OSError:
                    LOG.warning("worked example picture %s is missing", root / example["image_path"])
                    out[example_img] = gr.update(visible=False)
                out[example_md] = EXAMPLES[mode].format(a=_md(a), b=_md(b))
            return out

        def quiz_page(state: dict) -> dict:
            return {**page("quiz"), sess: {**state, "stage": "quiz"}, **{r: gr.update(value=None) for r in radios}}

        def reset_controls(left: str, right: str, choices: Sequence[str]) -> dict:
            out: dict = {submit_btn: gr.update(visible=True), next_btn: gr.update(visible=False), feedback_md: ""}
            if mode == "infer":
                out[controls["ends"]] = (
                    "<div style='display:flex;justify-content:space-between;font-weight:600'>"
                    f"<span id='left-end'>← 100 % {html.escape(left)}</span><span>50/50</span>"
                    f"<span id='right-end'>100 % {html.escape(right)} →</span></div>")
                out[controls["mix"]] = gr.update(value=SLIDER_START, label=f"Mixing: 0 = all {left}, 100 = all {right}")
                out[controls["conf"]] = gr.update(value=SLIDER_START)
            elif mode == "softlabel":
                out[controls["choice1"]] = gr.update(choices=list(choices), value=None)
                out[controls["choice2"]] = gr.update(choices=["None"] + list(choices), value="None")
                out[controls["prob1"]] = gr.update(value=SLIDER_START)
                out[controls["prob2"]] = gr.update(value=0)
            else:
                out[controls["clicks"]] = "No clicks yet."
            return out

        def fresh(state: dict, **kw: Any) -> dict:
            return {**state, "shown_at": time.monotonic(), "mix_touched": False, "conf_touched": False, "clicks": [],
                    "answered": False, **kw}

        def practice_page(state: dict, k: int) -> dict:
            while k < len(practice):
                it = practice[k]
                scale = display_scale(it["height"], it["width"])
                try:
                    img = _load_stimulus(root, it["image_path"], scale)
                except OSError:
                    LOG.warning("practice picture %s is missing; skipped", root / it["image_path"])
                    k += 1
                    continue
                rng = np.random.default_rng([int(cfg.get("seed", 0)), zlib.crc32(state["ext"].encode()), 100 + k])
                left1 = bool(rng.random() < 0.5)
                a, b = (it["class1"], it["class2"]) if left1 else (it["class2"], it["class1"])
                choices = [it["choices"][j] for j in rng.permutation(len(it["choices"]))]
                st = fresh(state, stage="practice", practice_k=k, left1=left1, h=it["height"], w=it["width"],
                           scale=scale, choices=choices, answered=False)
                return {**page("task"), **reset_controls(a, b, choices), sess: st, image: img,
                        progress_html: "", prompt_md: PROMPT[mode].format(a=_md(a), b=_md(b)),
                        banner: f"**Practice {k + 1} of {len(practice)}** — not part of the study; you will see "
                                "feedback after each answer."}
            return quiz_page(state) if questions else item_page(state)

        def item_page(state: dict, note: str = "") -> dict:
            ann = state["ann"]
            while True:
                asg = next_assignment(db, ann)
                prog = progress(db, ann)
                if asg is None:
                    return end_page(state, prog.total)
                it = asg.item
                scale = display_scale(it["height"], it["width"])
                try:
                    img = _load_stimulus(root, it["image_path"], scale)
                    break
                except OSError:  # the file vanished while serving: skip it, tell the team, never the path
                    LOG.warning("stimulus %s of item %s is missing; annotator %s skips it", root / it["image_path"],
                                it["id"], state["ext"])
                    record_missing_stimulus(db, info, ann, asg.position, int(it["id"]))
                    note = "One picture could not be loaded and was skipped (the study team can see this)."
            bar = (f"<progress value='{prog.done}' max='{prog.total}' style='width:100%'></progress>"
                   f"<div>Item {prog.done + 1} of {prog.total} — <b id='progress-text'>{prog}</b> done</div>")
            st = fresh(state, stage="items", pos=asg.position, item_id=int(it["id"]), h=it["height"], w=it["width"],
                       scale=scale)
            return {**page("task"), **cleared(), **reset_controls(asg.left_class, asg.right_class, asg.choice_order),
                    sess: st, image: img, progress_html: bar, banner: "",
                    prompt_md: PROMPT[mode].format(a=_md(asg.left_class), b=_md(asg.right_class)), status_md: note}

        def end_page(state: dict, total: int) -> dict:
            code = cfg.get("completion_code")
            text = (f"## Thank you!\nYou have answered all {total} items.\n\n"
                    + (f"Your completion code is **<code id='code'>{html.escape(str(code))}</code>**. "
                       if code else "")
                    + ("Press the button below to return to the recruiting site." if cfg.get("redirect_url")
                       else "You can close this tab."))
            return {**page("end"), sess: {**state, "stage": "done"}, end_md: text,
                    redirect_btn: gr.update(visible=bool(cfg.get("redirect_url")), link=cfg.get("redirect_url"))}

        def route(state: dict, note: str = "") -> dict:
            status = annotator_status(db, info, state["ann"])
            if not status.consented:
                return consent_page(state)
            if not status.qualified:
                return instructions_page(state, note)
            return item_page(state, note)

        # ------------------------------------------------------------------ guards
        def owner(state: dict | None, request: gr.Request | None, stages: Sequence[str]) -> dict:
            if not state:
                raise StudyInputError("enter your participant id and press Start first", field="annotator")
            if require_login and getattr(request, "username", None) != state["ext"]:
                raise StudyInputError("this page belongs to another login; reload the page", field="session")
            if state.get("stage") not in stages:
                raise StudyInputError("this page is out of date; reload it to continue where you left off",
                                      field="session")
            return state

        def guarded(fn: Callable[..., dict]) -> Callable[..., dict]:
            """Run a handler; a refused request is shown inline, an unexpected error logged (never shown)."""
            def run(*args: Any) -> dict:
                try:
                    return fn(*args)
                except StudyInputError as err:
                    return inline(err)
                except Exception:  # noqa: BLE001 - a bug: log it with the traceback, tell the person plainly
                    LOG.exception("handler %s failed", fn.__name__)
                    return {**cleared(), **{m: GENERIC_ERROR for m in page_msgs}}
            return functools.wraps(fn)(run)

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

        # ------------------------------------------------------------------ handlers
        def begin(external: str, request: gr.Request | None, url_params: dict | None = None) -> dict:
            session = getattr(request, "session_hash", None)
            ann = start_annotator(db, info, external, url_params=url_params, session=session)
            return {**cleared(), **route({"ann": ann, "ext": external, "stage": "start"}),
                    annotator: gr.update(value=external)}

        def start(typed: str, request: gr.Request) -> dict:
            external = check_annotator_id(request.username if require_login else typed)
            return begin(external, request)

        def on_load(request: gr.Request) -> dict:
            if require_login and getattr(request, "username", None):
                return begin(check_annotator_id(request.username), request)
            params = dict(getattr(request, "query_params", None) or {})
            external = params.get("PROLIFIC_PID") or params.get("id")
            if not external:
                return {}
            try:
                return begin(check_annotator_id(external), request, url_params=params)
            except StudyInputError as err:
                return {**page("login"), **inline(err)}

        def consent(accepted: bool, state: dict | None, request: gr.Request) -> dict:
            state = owner(state, request, ("consent",))
            record_consent(db, info, state["ann"], accepted, session=getattr(request, "session_hash", None))
            return {**cleared(), **instructions_page(state)}

        def instructions_done(state: dict | None, request: gr.Request) -> dict:
            state = owner(state, request, ("instructions",))
            if practice and not state.get("practised"):
                return {**cleared(), **practice_page(state, 0)}
            return {**cleared(), **(quiz_page(state) if questions else item_page(state))}

        def practice_next(state: dict | None, request: gr.Request) -> dict:
            state = owner(state, request, ("practice",))
            if not state.get("answered"):
                raise StudyInputError("answer this practice item first", field="session")
            k = state["practice_k"] + 1
            if k >= len(practice):
                state = {**state, "practised": True}
            return {**cleared(), **practice_page(state, k)}

        def quiz(answers: list, state: dict | None, request: gr.Request) -> dict:
            state = owner(state, request, ("quiz",))
            wrong = check_comprehension(db, info, state["ann"], list(answers),
                                        session=getattr(request, "session_hash", None))
            if wrong:
                nums = ", ".join(str(k + 1) for k in wrong)
                return {**cleared(), **instructions_page(
                    state, f"⚠️ {len(wrong)} of {len(questions)} answers were not right (question {nums}). Please "
                           "read the instructions again, then answer the questions again.")}
            return {**cleared(), **item_page(state)}

        def touch(key: str) -> Callable[..., Any]:
            def fn(state: dict | None) -> Any:
                if state and state.get("stage") in ("items", "practice"):
                    return {**state, key: True}
                return gr.skip()
            return fn

        def even(state: dict | None, request: gr.Request) -> dict:
            state = owner(state, request, ("items", "practice"))
            return {sess: {**state, "mix_touched": True}, controls["mix"]: gr.update(value=SLIDER_START),
                    controls["mix_msg"]: "50/50 set."}

        def current(state: dict) -> dict | None:
            """The stale-tab check: another tab may have answered this item already (then: the next page)."""
            if state["stage"] != "items":
                return None
            asg = next_assignment(db, state["ann"])
            if asg is None or asg.position != state["pos"]:
                return item_page(state, "This item had already been answered in another tab; here is your next "
                                        "item.")
            return None

        def shown(state: dict, clicks: Sequence[Sequence[float]], box: Sequence[int] | None = None) -> np.ndarray:
            if state["stage"] == "practice":
                rel = practice[state["practice_k"]]["image_path"]
            else:
                rel = next_assignment(db, state["ann"]).item["image_path"]
            return _marked(_load_stimulus(root, rel, state["scale"]), clicks, state["scale"], box)

        def clicks_state(state: dict | None, request: gr.Request) -> tuple[dict, dict | None]:
            """The session when its clicks may change now, and the page to show instead when the tab is stale."""
            state = owner(state, request, ("items", "practice"))
            stale = current(state)
            if stale is None and state["stage"] == "practice" and state["answered"]:
                raise StudyInputError("press Next for the next practice item", field="clicks")
            return state, stale

        def click(state: dict | None, request: gr.Request, evt: gr.EventData) -> dict:
            state, stale = clicks_state(state, request)
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
            return {**cleared(), sess: {**state, "clicks": clicks}, image: shown(state, clicks),
                    controls["clicks"]: text}

        def clear(state: dict | None, request: gr.Request) -> dict:
            state, stale = clicks_state(state, request)
            if stale is not None:
                return stale
            return {**cleared(), sess: {**state, "clicks": []}, image: shown(state, []),
                    controls["clicks"]: "No clicks yet."}

        def submit(values: list, state: dict | None, request: gr.Request) -> dict:
            state = owner(state, request, ("items", "practice"))
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
                it = practice[state["practice_k"]]
                right, text = practice_feedback(mode, {**it, "choices": state["choices"]}, answer,
                                                left_is_image1=state["left1"])
                _log_practice(it, answer, right, state, session)
                out = {**cleared(), sess: {**state, "answered": True},
                       feedback_md: ("**Right.** " if right else "**Not quite.** ") + text,
                       submit_btn: gr.update(visible=False), next_btn: gr.update(visible=True)}
                if mode == "click" and it["answer"].get("box") is not None:
                    out[image] = shown(state, state["clicks"], it["answer"]["box"])
                return out
            stale = current(state)
            if stale is not None:
                return stale
            stored = submit_answer(db, info, state["ann"], state["pos"], state["item_id"], answer,
                                   rt_ms=(time.monotonic() - state["shown_at"]) * 1000.0, session=session)
            return item_page(state, "Saved." if stored else "This item was already saved (duplicate ignored).")

        def _log_practice(it: dict, answer: Answer, right: bool, state: dict, session: str | None) -> None:
            with transaction(db) as con:
                record_event(con, state["ann"], "practice", {"position": it["position"], "right": right,
                                                              "answer": {k: v for k, v in vars(answer).items()}},
                             session)

        # ------------------------------------------------------------------ events
        demo.load(guarded(on_load), None, outputs, api_name=False, show_progress="hidden")
        start_btn.click(guarded(start), [annotator], outputs, api_name="start")
        annotator.submit(guarded(start), [annotator], outputs, api_name=False)
        consent_btn.click(guarded(consent), [agree, sess], outputs, api_name="consent")
        instr_btn.click(guarded(instructions_done), [sess], outputs, api_name="instructions_done")
        next_btn.click(guarded(practice_next), [sess], outputs, api_name="practice_next")
        quiz_btn.click(guarded(with_values(quiz, len(radios))), radios + [sess], outputs, api_name="quiz")
        if mode == "infer":
            for slider, key, api in ((controls["mix"], "mix_touched", "touch_mix"),
                                     (controls["conf"], "conf_touched", "touch_conf")):
                slider.input(touch(key), [sess], [sess], api_name=api, show_progress="hidden")
                slider.release(touch(key), [sess], [sess], api_name=False, show_progress="hidden")
            controls["even"].click(guarded(even), [sess], outputs, api_name="even", show_progress="hidden")
            submit_inputs = [controls["mix"], controls["conf"]]
        elif mode == "softlabel":
            submit_inputs = [controls["choice1"], controls["prob1"], controls["choice2"], controls["prob2"]]
        else:
            image.select(guarded(click), [sess], outputs, api_name="click", show_progress="hidden")
            controls["clear"].click(guarded(clear), [sess], outputs, api_name="clear_clicks")
            submit_inputs = []
        submit_btn.click(guarded(with_values(submit, len(submit_inputs))), submit_inputs + [sess], outputs,
                         api_name="submit", trigger_mode="once")
    demo.queue(default_concurrency_limit=8)
    return demo


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
