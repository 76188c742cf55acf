"""A seeded simulator of a school that keeps grading.

Each student has an ability, each subject a difficulty and each class a
level; a score is ``11 + ability + level - difficulty + noise``, rounded to
the half point as French grades usually are and clipped to 0..20. The same
seed always yields the same students and the same scores.
"""

from __future__ import annotations

import random
import string
import time
from collections.abc import Callable, Iterator, Sequence
from itertools import count as count_from

from gradelab.errors import ConfigError
from gradelab.record import SCORE_MAX, SCORE_MIN, Score

__all__ = ["DEFAULT_SUBJECTS", "class_names", "simulate_scores"]

DEFAULT_SUBJECTS = ("Math", "Physics", "French", "English", "History", "Biology")
MEAN_SCORE = 11.0
PERIODS_PER_YEAR = 3


def class_names(number: int) -> list[str]:
    """Return ``number`` class names: A, B, ..., Z, then AA, AB, ..."""
    letters = string.ascii_uppercase
    names = []
    for index in range(number):
        name = ""
        index += 1
        while index:
            index, remainder = divmod(index - 1, 26)
            name = letters[remainder] + name
        names.append(name)
    return names


def simulate_scores(
    count: int | None = None,
    seed: int = 0,
    classes: int | Sequence[str] = 3,
    subjects: int | Sequence[str] = 4,
    students: int = 25,
    start_time: float | None = None,
    interval: float = 1.0,
    clock: Callable[[], float] = time.time,
) -> Iterator[Score]:
    """Return an iterator of simulated scores, endless or ``count`` long.

    The school grades in rounds: in each round every student gets one score
    in every subject, in a shuffled order, and the round's period is ``T1``,
    ``T2`` or ``T3`` (the three terms of a French school year), in turn.

    Parameters
    ----------
    count : int, optional
        How many scores to yield; by default the stream never ends.
    seed : int
        Seed of the random generator.
    classes : int or sequence of str
        Class names, or how many classes (named A, B, C, ...).
    subjects : int or sequence of str
        Subject names, or how many of the default subjects to use.
    students : int
        Students per class.
    start_time : float, optional
        Event time of the first score, in seconds since the epoch. With it,
        event times are ``start_time + i * interval`` and fully reproducible;
        without it, each score's event time is the ``clock`` reading.
    interval : float
        Seconds between two event times when ``start_time`` is given.

    Raises
    ------
    ConfigError
        When called, not at the first score, if an option is invalid.
    """
    if count is not None and count < 0:
        raise ConfigError(f"Invalid count {count}: expected 0 or more scores.")
    if students < 1:
        raise ConfigError(f"Invalid students {students}: expected at least 1.")
    if isinstance(classes, int) and classes < 1:
        raise ConfigError(
            f"Invalid classes {classes}: expected at least 1, or a list of names."
        )
    class_list = class_names(classes) if isinstance(classes, int) else list(classes)
    if isinstance(subjects, int):
        if not 1 <= subjects <= len(DEFAULT_SUBJECTS):
            raise ConfigError(
                f"Invalid subjects {subjects}: expected 1 to "
                f"{len(DEFAULT_SUBJECTS)}, or a list of subject names."
            )
        subject_list = list(DEFAULT_SUBJECTS[:subjects])
    else:
        subject_list = list(subjects)
    if not class_list or not subject_list:
        raise ConfigError("The simulator needs at least one class and one subject.")
    for kind, names in (("class", class_list), ("subject", subject_list)):
        for name in names:
            if not isinstance(name, str) or not name.strip():
                raise ConfigError(
                    f"Invalid {kind} name {name!r}: expected a non-empty string."
                )
        if len(set(names)) != len(names):
            raise ConfigError(f"Invalid {kind} names {names!r}: a name is repeated.")
    # The checks above run when simulate_scores is called. The generator
    # below starts only at the first next(), when a caller pulls a score.
    return _generate(
        count, seed, class_list, subject_list, students, start_time, interval, clock
    )


def _generate(
    count: int | None,
    seed: int,
    class_list: list[str],
    subject_list: list[str],
    students: int,
    start_time: float | None,
    interval: float,
    clock: Callable[[], float],
) -> Iterator[Score]:
    rng = random.Random(seed)
    levels = {name: rng.gauss(0, 1.0) for name in class_list}
    difficulties = {name: rng.gauss(0, 1.5) for name in subject_list}
    abilities = {
        (class_name, number): rng.gauss(0, 2.5)
        for class_name in class_list
        for number in range(1, students + 1)
    }
    pairs = [(student, subject) for student in abilities for subject in subject_list]

    produced = 0
    for round_number in count_from():
        period = f"T{round_number % PERIODS_PER_YEAR + 1}"
        rng.shuffle(pairs)
        for (class_name, number), subject in pairs:
            if count is not None and produced >= count:
                return
            raw = (
                MEAN_SCORE
                + abilities[class_name, number]
                + levels[class_name]
                - difficulties[subject]
                + rng.gauss(0, 2.0)
            )
            score = min(max(round(raw * 2) / 2, float(SCORE_MIN)), float(SCORE_MAX))
            if start_time is None:
                ts = clock()
            else:
                ts = start_time + produced * interval
            yield Score(
                class_=class_name,
                subject=subject,
                score=int(score) if score.is_integer() else score,
                student_id=f"{class_name}-{number:02d}",
                period=period,
                ts=ts,
            )
            produced += 1
