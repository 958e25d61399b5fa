"""Submissions on the leaderboard: ``validate`` checks a submission folder without running any of its code and
rescores it from its predictions; ``boards`` writes the tables that put accepted submissions beside the built-in
models run on the same official folds.

(The package is ``submission``, singular: ``leaderboard/submissions/`` is where submission folders are put.)
"""

from matcv.leaderboard.submission.boards import SubmissionBoard, write_submission_boards
from matcv.leaderboard.submission.validate import OFFICIAL_DIR, Verdict, validate_all, validate_submission

__all__ = ["OFFICIAL_DIR", "SubmissionBoard", "Verdict", "validate_all", "validate_submission",
           "write_submission_boards"]
