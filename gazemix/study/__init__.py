"""Human-judgment studies: SQLite storage, study building, the answer protocol, analysis and export.

Modelled on the HILL MixE suite of Collins et al., "Human-in-the-Loop Mixup" (UAI 2023); the Gradio app
that serves a study is ``apps/judgment_app.py``.
"""

from gazemix.study.db import StudyInputError, init_db, open_existing
from gazemix.study.store import (MAX_CLICKS, MODES, SLIDER_START, Answer, AnnotatorStatus, Assignment, ItemRecord,
                                 PracticeRecord, Progress, StudyInfo, add_items, annotator_status, check_annotator_id,
                                 check_clicks, check_comprehension, create_study, get_study, next_assignment,
                                 practice_feedback, practice_items, progress, record_consent,
                                 record_missing_stimulus, start_annotator, study_exists, submit_answer)

__all__ = ["MAX_CLICKS", "MODES", "SLIDER_START", "Answer", "AnnotatorStatus", "Assignment", "ItemRecord",
           "PracticeRecord", "Progress", "StudyInfo", "StudyInputError", "add_items", "annotator_status",
           "check_annotator_id", "check_clicks", "check_comprehension", "create_study", "get_study", "init_db",
           "next_assignment", "open_existing", "practice_feedback", "practice_items", "progress", "record_consent",
           "record_missing_stimulus", "start_annotator", "study_exists", "submit_answer"]
