"""The human-judgment study app: a Gradio Blocks app serving one study from a gazemix study database.

Modelled on the HILL MixE suite of Collins et al., "Human-in-the-Loop Mixup" (UAI 2023), with three
elicitation modes (chosen per study): ``infer`` (mixing slider + confidence slider, endpoint classes
shown, left/right side randomised), ``softlabel`` (most and second most likely class with
probabilities, endpoints hidden among distractors) and ``click`` (click where the deciding object is,
stored in image pixels). Progress lives in the database, so a person can stop, reload or come back after
a server restart and continue where they left off; every answer is validated on the server.

Usage:
    python -m apps.judgment_app --db study.sqlite
    python -m apps.judgment_app --db study.sqlite --host 0.0.0.0 --port 7861 --auth alice:secret
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from pathlib import Path
from typing import Sequence

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported: nothing leaves the machine

import gradio as gr  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from gazemix.cli.app import add_arguments  # noqa: E402
from gazemix.study import (Answer, StudyInputError, check_annotator_id, get_study, next_assignment,
                           open_existing, progress, start_annotator, submit_answer)  # noqa: E402

__all__ = ["build_app", "main", "parse_auth"]

INSTRUCTIONS = {
    "infer": "Each image blends two photographs. The two classes are named above the slider. Move the **mixing "
             "slider** to how much of the image you think is each class (left end: all the left class; right end: "
             "all the right class), then say how **confident** you are. Answer what most people would say.",
    "softlabel": "Each image may show one or more objects. Pick the **most likely class** and its probability, "
                 "and, if you see another, the **second most likely class** and its probability (or None).",
    "click": "Click on the image **at the object that decides what the image shows** (you may click a few "
             "times). Then press Submit.",
}
DISPLAY_HEIGHT = 320
DISPLAY_MIN = 256


def display_scale(h: int, w: int) -> int:
    """Integer up-scaling of a small stimulus for display (CIFAR's 32 px becomes 256 px); 1 for large ones."""
    return max(1, DISPLAY_MIN // max(h, w))


def _display_image(root: Path, item: dict) -> str | np.ndarray:
    """The stimulus as shown: its PNG (served as a static file, no per-request copy that concurrent sessions
    could race on), up-scaled by :func:`display_scale` with nearest-neighbour pixels into a cached file;
    a grey square for imported stimuli whose PNG is not available."""
    h, w = item["height"] or 32, item["width"] or 32
    k = display_scale(h, w)
    if not item["image_path"]:
        return np.full((h * k, w * k, 3), 128, dtype=np.uint8)
    src = root / item["image_path"]
    if k == 1:
        return str(src)
    big = src.with_name(f"{src.stem}_display_x{k}.png")
    if not big.exists():
        tmp = big.with_name(f"{big.stem}.{os.getpid()}.{threading.get_ident()}.tmp.png")
        img = Image.open(src).convert("RGB")
        img.resize((img.width * k, img.height * k), Image.NEAREST).save(tmp)
        os.replace(tmp, big)  # atomic: a concurrent reader sees the old state or the whole file
    return str(big)


def _with_clicks(img: str | np.ndarray, clicks: Sequence[Sequence[float]], k: int) -> np.ndarray:
    """The displayed image with a small red cross at each click (given in image pixels, drawn at scale ``k``)."""
    out = np.array(Image.open(img).convert("RGB")) if isinstance(img, str) else img.copy()
    h, w = out.shape[:2]
    r = max(2, min(h, w) // 40)
    for x, y in clicks:
        x, y = min(max(int(round((x + 0.5) * k - 0.5)), 0), w - 1), min(max(int(round((y + 0.5) * k - 0.5)), 0), h - 1)
        out[max(0, y - r):y + r + 1, x] = (255, 0, 0)
        out[y, max(0, x - r):x + r + 1] = (255, 0, 0)
    return out


def parse_auth(pairs: Sequence[str] = (), auth_file: str | os.PathLike | None = None) -> list[tuple[str, str]]:
    """``user:pass`` strings and/or a file with one ``user:pass`` per line (``#`` comments) → credentials."""
    lines = [(f"--auth {p}", p) for p in pairs]
    if auth_file is not None:
        path = Path(auth_file)
        if not path.is_file():
            raise FileNotFoundError(f"--auth-file {path} does not exist")
        lines += [(f"{path}, line {k}", s.strip()) for k, s in enumerate(path.read_text().splitlines(), 1)
                  if s.strip() and not s.lstrip().startswith("#")]
    creds = []
    for where, text in lines:
        user, sep, pw = text.partition(":")
        if not sep or not pw:
            raise ValueError(f"{where}: expected user:password, got {text[:40]!r}")
        creds.append((check_annotator_id(user), pw))
    return creds


def build_app(db_path: str | os.PathLike, *, study: str | None = None, require_login: bool = False) -> gr.Blocks:
    """The study app for ``study`` (the only one in ``db_path`` by default).

    Args:
        require_login: the annotator id is the logged-in user (launch with ``auth=``); no id box is shown.
    """
    db = open_existing(db_path)
    info = get_study(db, study)
    root, mode = db.parent, info.mode
    gr.set_static_paths([str(root / f"{db.stem}_media")])

    def serve(annotator_id: int, external_id: str, status: str) -> dict:
        asg = next_assignment(db, annotator_id)
        prog = progress(db, annotator_id)
        bar = f"<progress value='{prog.done}' max='{prog.total}'></progress> <b id='progress-text'>{prog}</b>"
        common = {progress_html: gr.update(value=bar, visible=True), login_row: gr.update(visible=False),
                  status_md: status}
        if asg is None:
            return {**common, task_row: gr.update(visible=False), sess: {"annotator_id": annotator_id,
                                                                         "external_id": external_id, "done": True},
                    prompt_md: "", done_md: gr.update(value=f"**All {prog.total} items done — thank you, "
                                                            f"{external_id}!** You can close this tab.", visible=True)}
        state = {"annotator_id": annotator_id, "external_id": external_id, "position": asg.position,
                 "item_id": int(asg.item["id"]), "shown_at": time.monotonic(), "mix_touched": False,
                 "conf_touched": False, "clicks": [], "done": False}
        img = _display_image(root, asg.item)
        if mode == "infer":
            prompt = (f"This image blends a **{asg.left_class}** and a **{asg.right_class}**.")
        elif mode == "softlabel":
            prompt = "Which classes do you see?"
        else:
            prompt = "Click where the object that decides the label is."
        choices = asg.choice_order or [asg.item["class1"], asg.item["class2"]]
        return {**common, sess: state, task_row: gr.update(visible=True), done_md: gr.update(visible=False),
                image: img, prompt_md: prompt,
                mix: gr.update(value=50, label=f"← 100 % {asg.left_class}   ·   50/50   ·   100 % {asg.right_class} →"),
                conf: gr.update(value=50), choice1: gr.update(choices=choices, value=None),
                choice2: gr.update(choices=["None"] + choices, value="None"), prob1: gr.update(value=50),
                prob2: gr.update(value=0), clicks_md: "No clicks yet."}

    def start(annotator: str, request: gr.Request) -> dict:
        try:
            external = check_annotator_id(request.username if require_login else annotator)
            ann = start_annotator(db, info, external)
        except StudyInputError as err:
            raise gr.Error(str(err)) from None
        return serve(ann, external, f"Welcome, {external}.")

    def touch(key: str):
        def fn(state: dict | None) -> dict | None:
            if state and not state.get("done"):
                state = {**state, key: True}
            return state
        return fn

    def current_item(state: dict | None) -> dict:
        if not state or state.get("done"):
            raise gr.Error("press Start first")
        asg = next_assignment(db, state["annotator_id"])
        if asg is None or asg.position != state["position"]:
            raise gr.Error("this item was already answered (another tab?); reload the page")
        return asg.item

    def click(state: dict | None, evt: gr.SelectData) -> tuple:
        item = current_item(state)
        k = display_scale(item["height"], item["width"])
        # the click comes in displayed pixels; store it in image pixels (pixel centres map onto pixel centres)
        x, y = ((float(v) + 0.5) / k - 0.5 for v in evt.index)
        x, y = min(max(x, 0.0), item["width"] - 1.0), min(max(y, 0.0), item["height"] - 1.0)
        clicks = state["clicks"] + [[round(x, 2), round(y, 2)]]
        text = f"{len(clicks)} click(s): " + ", ".join(f"({cx:.0f}, {cy:.0f})" for cx, cy in clicks)
        return {**state, "clicks": clicks}, _with_clicks(_display_image(root, item), clicks, k), text

    def clear(state: dict | None) -> tuple:
        item = current_item(state)
        return {**state, "clicks": []}, _display_image(root, item), "No clicks yet."

    def submit(mix_v: float, conf_v: float, c1: str | None, p1: float, c2: str | None, p2: float,
               state: dict | None, request: gr.Request) -> dict:
        if not state:
            raise gr.Error("enter your annotator id and press Start first")
        if state.get("done"):
            raise gr.Error("all items are done")
        answer = Answer(slider=mix_v, confidence=conf_v, slider_touched=state["mix_touched"],
                        confidence_touched=state["conf_touched"], choice1=c1, prob1=p1, choice2=c2, prob2=p2,
                        clicks=state["clicks"])
        try:
            stored = submit_answer(db, info, state["annotator_id"], state["position"], state["item_id"], answer,
                                   rt_ms=(time.monotonic() - state["shown_at"]) * 1000.0,
                                   session=getattr(request, "session_hash", None))
        except StudyInputError as err:
            raise gr.Error(str(err)) from None
        return serve(state["annotator_id"], state["external_id"],
                     "Saved." if stored else "This item was already saved (duplicate ignored).")

    with gr.Blocks(title=f"gazemix study: {info.name}") as demo:
        sess = gr.State(None)
        gr.Markdown(f"## {info.name}\n{info.instructions or INSTRUCTIONS[mode]}")
        with gr.Row(visible=True) as login_row:
            annotator = gr.Textbox(label="Your annotator id", placeholder="e.g. P017", max_length=64,
                                   elem_id="annotator", visible=not require_login)
            start_btn = gr.Button("Start / resume", elem_id="start", variant="primary")
        progress_html = gr.HTML(visible=False, elem_id="progress")
        done_md = gr.Markdown(visible=False, elem_id="done")
        with gr.Row(visible=False) as task_row:
            image = gr.Image(interactive=False, show_label=False, height=DISPLAY_HEIGHT, type="numpy",
                             elem_id="stimulus", buttons=[])
            with gr.Column():
                prompt_md = gr.Markdown(elem_id="prompt")
                mix = gr.Slider(0, 100, value=50, step=1, label="mixing", visible=mode == "infer", elem_id="mix")
                conf = gr.Slider(0, 100, value=50, step=1, label="confidence: 0 % … 50 % … 100 % confident",
                                 visible=mode == "infer", elem_id="conf")
                choice1 = gr.Radio([], label="Most likely class", visible=mode == "softlabel", elem_id="choice1")
                prob1 = gr.Slider(0, 100, value=50, step=1, label="its probability (%)", visible=mode == "softlabel",
                                  elem_id="prob1")
                choice2 = gr.Radio(["None"], value="None", label="Second most likely class",
                                   visible=mode == "softlabel", elem_id="choice2")
                prob2 = gr.Slider(0, 100, value=0, step=1, label="its probability (%)", visible=mode == "softlabel",
                                  elem_id="prob2")
                clicks_md = gr.Markdown("No clicks yet.", visible=mode == "click", elem_id="clicks")
                clear_btn = gr.Button("Clear clicks", visible=mode == "click", elem_id="clear")
                submit_btn = gr.Button("Submit", variant="primary", elem_id="submit")
        status_md = gr.Markdown(elem_id="status")

        outputs = [sess, progress_html, login_row, task_row, done_md, image, prompt_md, mix, conf, choice1, prob1,
                   choice2, prob2, clicks_md, status_md]
        start_btn.click(start, [annotator], outputs, api_name="start")
        annotator.submit(start, [annotator], outputs, api_name=False)
        for slider, key, api in ((mix, "mix_touched", "touch_mix"), (conf, "conf_touched", "touch_conf")):
            slider.input(touch(key), [sess], [sess], api_name=api, show_progress="hidden")
            slider.release(touch(key), [sess], [sess], api_name=False, show_progress="hidden")
        image.select(click, [sess], [sess, image, clicks_md], api_name="click")
        clear_btn.click(clear, [sess], [sess, image, clicks_md], api_name="clear_clicks")
        submit_btn.click(submit, [mix, conf, choice1, prob1, choice2, prob2, sess], outputs, api_name="submit",
                         trigger_mode="once")
    demo.queue(default_concurrency_limit=8)
    return demo


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m apps.judgment_app --db study.sqlite [--study NAME] [--host --port --auth user:pass | --auth-file]``."""
    p = argparse.ArgumentParser(prog="python -m apps.judgment_app", description=__doc__.split("\n\n")[0])
    add_arguments(p)
    return launch(p.parse_args(argv))


def launch(args: argparse.Namespace) -> int:
    """Serve the study named by parsed ``args`` until interrupted (login required when credentials are given)."""
    creds = parse_auth(args.auth, args.auth_file)
    demo = build_app(args.db, study=args.study, require_login=bool(creds))
    demo.launch(server_name=args.host, server_port=args.port, auth=creds or None, show_error=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
