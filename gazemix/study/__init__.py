"""Human-judgment studies: SQLite storage, study building, the answer protocol, analysis and export.

Modelled on the HILL MixE suite of Collins et al., "Human-in-the-Loop Mixup" (UAI 2023); the Gradio app
that serves a study is ``apps/judgment_app.py``.
"""

from gazemix.study.db import StudyInputError, init_db, open_existing
from gazemix.study.store import (MODES, Answer, Assignment, ItemRecord, Progress, StudyInfo, add_items,
                                 check_annotator_id, create_study, get_study, next_assignment, progress,
                                 start_annotator, submit_answer)

__all__ = ["MODES", "Answer", "Assignment", "ItemRecord", "Progress", "StudyInfo", "StudyInputError", "add_items",
           "check_annotator_id", "create_study", "get_study", "init_db", "next_assignment", "open_existing",
           "progress", "start_annotator", "submit_answer"]
