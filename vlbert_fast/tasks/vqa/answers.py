"""VQA v2 answers: the official evaluation's normalisation, soft scores, the accuracy, the answer vocabulary.

The rules of the current official evaluation script (github.com/GT-Vision-Lab/VQA,
PythonEvaluationTools/vqaEvaluation/vqaEval.py as of its commit a013f00 of 2021-03-11, "Fixed processing answers
bug"), written anew here:

1. whitespace: newlines and tabs become spaces and the answer is stripped (the prediction and every human answer);
2. punctuation: each of ; / [ ] " { } ( ) = + \\ _ - > < @ ` , ? ! is deleted where the answer has it next to a
   space or the answer holds a digit-comma-digit group ("1,000"), and replaced by a space otherwise; then periods
   not followed by a digit are deleted ("2.5" keeps its point), at most 32 of them (the script passes `re.UNICODE`,
   32, where `re.sub` takes its count). The script's period pattern begins with a malformed look-behind, `(?!<=\\d)`,
   which is in fact a look-ahead that always holds at a period; so only the "not followed by a digit" part acts;
3. digits and articles: lower-cased, split on whitespace, number words zero..ten (and "none") become digits,
   the articles a / an / the are dropped, and the contractions of the script's table get their apostrophe
   ("dont" -> "don't").

Accuracy of one predicted answer against the 10 human answers of its question: step 1 on all of them; then, only
when the humans do not all agree (after step 1), steps 2 and 3 on the prediction and on every human answer; when
they all agree, nothing more on either side (a prediction "Yes" scores 0 against ten "yes"). Then for each of the
10 leave-one-out subsets of 9 humans, min(1, humans among the 9 who gave exactly the prediction / 3); the mean over
the 10 subsets. With m of the 10 humans agreeing: m = 0, 1, 2, 3, >=4 give 0, 0.3, 0.6, 0.9, 1. (Before the 2021
fix the script normalised the prediction always and the humans with step 2 only, so "2" scored 0 against humans who
wrote "two" while disagreeing.) Training targets use the same soft score over fully normalised human answers (the
original VL-BERT's `get_soft_target`), which is what the metric compares whenever the humans disagree.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

from ...data.formats.paths import write_atomic

PUNCTUATION = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!")
DIGIT_COMMA_DIGIT = re.compile(r"\d,\d")
PERIOD_NOT_BEFORE_DIGIT = re.compile(r"\.(?!\d)")
PERIODS_DELETED_AT_MOST = 32
"""The script calls `periodStrip.sub("", text, re.UNICODE)`: re.UNICODE (32) lands in `count`."""
NUMBER_WORDS = {w: str(i) for i, w in enumerate("zero one two three four five six seven eight nine ten".split())} | {
    "none": "0"
}
ARTICLES = frozenset({"a", "an", "the"})

# The script's contraction table as "without with" pairs. It holds a few entries that can never match (keys with a
# capital I, applied after lower-casing) and one pair the wrong way round (somebody'd -> somebodyd); both are kept,
# since the metric is defined by the script.
_CONTRACTION_PAIRS = """
aint ain't|arent aren't|cant can't|couldve could've|couldnt couldn't|couldn'tve couldn't've|couldnt've couldn't've
didnt didn't|doesnt doesn't|dont don't|hadnt hadn't|hadnt've hadn't've|hadn'tve hadn't've|hasnt hasn't
havent haven't|hed he'd|hed've he'd've|he'dve he'd've|hes he's|howd how'd|howll how'll|hows how's|Id've I'd've
I'dve I'd've|Im I'm|Ive I've|isnt isn't|itd it'd|itd've it'd've|it'dve it'd've|itll it'll|let's let's|maam ma'am
mightnt mightn't|mightnt've mightn't've|mightn'tve mightn't've|mightve might've|mustnt mustn't|mustve must've
neednt needn't|notve not've|oclock o'clock|oughtnt oughtn't|ow's'at 'ow's'at|'ows'at 'ow's'at|'ow'sat 'ow's'at
shant shan't|shed've she'd've|she'dve she'd've|she's she's|shouldve should've|shouldnt shouldn't
shouldnt've shouldn't've|shouldn'tve shouldn't've|somebody'd somebodyd|somebodyd've somebody'd've
somebody'dve somebody'd've|somebodyll somebody'll|somebodys somebody's|someoned someone'd
someoned've someone'd've|someone'dve someone'd've|someonell someone'll|someones someone's|somethingd something'd
somethingd've something'd've|something'dve something'd've|somethingll something'll|thats that's|thered there'd
thered've there'd've|there'dve there'd've|therere there're|theres there's|theyd they'd|theyd've they'd've
they'dve they'd've|theyll they'll|theyre they're|theyve they've|twas 'twas|wasnt wasn't|wed've we'd've
we'dve we'd've|weve we've|werent weren't|whatll what'll|whatre what're|whats what's|whatve what've|whens when's
whered where'd|wheres where's|whereve where've|whod who'd|whod've who'd've|who'dve who'd've|wholl who'll
whos who's|whove who've|whyll why'll|whyre why're|whys why's|wont won't|wouldve would've|wouldnt wouldn't
wouldnt've wouldn't've|wouldn'tve wouldn't've|yall y'all|yall'll y'all'll|y'allll y'all'll|yall'd've y'all'd've
y'alld've y'all'd've|y'all'dve y'all'd've|youd you'd|youd've you'd've|you'dve you'd've|youll you'll
youre you're|youve you've
"""
CONTRACTIONS = dict(
    pair.split(" ") for line in _CONTRACTION_PAIRS.strip().splitlines() for pair in line.split("|") if pair
)


def process_punctuation(text: str) -> str:
    """Step 2 of the module docstring."""
    delete_all = DIGIT_COMMA_DIGIT.search(text) is not None
    out = text
    for p in PUNCTUATION:
        if delete_all or f"{p} " in text or f" {p}" in text:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return PERIOD_NOT_BEFORE_DIGIT.sub("", out, count=PERIODS_DELETED_AT_MOST)


def process_digits_articles(text: str) -> str:
    """Step 3 of the module docstring."""
    words = [NUMBER_WORDS.get(w, w) for w in text.lower().split()]
    return " ".join(CONTRACTIONS.get(w, w) for w in words if w not in ARTICLES)


def strip_whitespace(answer: str) -> str:
    """Step 1 of the module docstring."""
    return answer.replace("\n", " ").replace("\t", " ").strip()


def normalize_answer(answer: str) -> str:
    """Steps 1-3 of the module docstring: what the metric compares when the humans disagree, and the form of the
    answer vocabulary and the training targets."""
    return process_digits_articles(process_punctuation(strip_whitespace(answer)))


def leave_one_out_score(matches: int, num_humans: int = 10) -> float:
    """Mean over the leave-one-out subsets of min(1, matches among the others / 3), for an answer `matches` of the
    `num_humans` humans gave."""
    if num_humans < 1 or not 0 <= matches <= num_humans:
        raise ValueError(f"leave_one_out_score: need 0 <= matches <= num_humans >= 1, found {matches}, {num_humans}")
    agreeing = matches * min(1.0, (matches - 1) / 3)  # a left-out human who gave it leaves matches - 1 others
    others = (num_humans - matches) * min(1.0, matches / 3)
    return (agreeing + others) / num_humans


def answer_accuracy(prediction: str, human_answers: Sequence[str]) -> float:
    """The official accuracy of one predicted answer against the human answers of its question (in [0, 1]): the
    current script's rules (module docstring), leave-one-out over the humans."""
    if not human_answers:
        raise ValueError("answer_accuracy: the question has no human answers")
    predicted = strip_whitespace(prediction)
    humans = [strip_whitespace(a) for a in human_answers]
    if len(set(humans)) > 1:
        humans = [process_digits_articles(process_punctuation(a)) for a in humans]
        predicted = process_digits_articles(process_punctuation(predicted))
    return leave_one_out_score(sum(h == predicted for h in humans), len(humans))


def soft_scores(human_answers: Sequence[str]) -> dict[str, float]:
    """Training target: {normalised answer: soft score} for every answer the humans gave."""
    counts = Counter(normalize_answer(a) for a in human_answers)
    return {a: leave_one_out_score(m, len(human_answers)) for a, m in counts.items()}


def build_answer_vocab(answer_lists: Iterable[Sequence[str]], size: int) -> list[str]:
    """The `size` most frequent normalised human answers (each human answer counts once), ties broken by the
    answer's text so the vocabulary is reproducible."""
    counts: Counter[str] = Counter()
    for answers in answer_lists:
        counts.update(normalize_answer(a) for a in answers)
    counts.pop("", None)
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return [a for a, _ in ranked[:size]]


def save_answer_vocab(answers: Sequence[str], path: Path) -> None:
    write_atomic(path, "".join(f"{a}\n" for a in answers))


def load_answer_vocab(path: Path) -> list[str]:
    if not path.is_file():
        raise FileNotFoundError(f"answer vocabulary {path}: no such file (one answer per line expected)")
    answers = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    answers = [a for a in answers if a]
    if not answers:
        raise ValueError(f"answer vocabulary {path} is empty")
    if len(set(answers)) != len(answers):
        dup = next(a for a, c in Counter(answers).items() if c > 1)
        raise ValueError(f"answer vocabulary {path}: answer {dup!r} is listed twice")
    return answers
