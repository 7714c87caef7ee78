"""Agreement of `introspect verify --extract` with PyPI math-verify on model-style responses built from the shared
MATH500 answers: per problem, the answer as given, up to two equivalent rewrites (a/b for \\frac, \\dfrac, a
decimal, "x = " before it, units, a reordered sum, thousands separators, an unreduced fraction, ...) and up to two
wrong answers (off by one, sign flip, wrong fraction, swapped pair, changed coefficient, another problem's answer),
each inside reasoning text ending in \\boxed{...} (some with a <think> block first).
math-verify's verdict is verify(parse("$gold$"), parse(response)); ours extracts the answer from the response and
compares it with the gold answer. Prints the agreement by kind and every disagreement; exits 1 below 97%.
Usage: math_verify_agreement.py PATH/TO/introspect SHARED_DATA_DIR [--keep OUT.jsonl]
"""
import json
import random
import re
import subprocess
import sys
import tempfile
from fractions import Fraction
from pathlib import Path

GOAL = 0.97

TEMPLATES = [
    "{reasoning}\n\nTherefore, the final answer is $\\boxed{{{answer}}}$.",
    "<think>\n{reasoning}\n</think>\n\n{short}\n\nThe answer is $\\boxed{{{answer}}}$.",
    "{reasoning}\n\n**Final Answer**\n\\[\n\\boxed{{{answer}}}\n\\]",
    "{reasoning} So the answer is \\(\\boxed{{{answer}}}\\).",
]

FRAC = re.compile(r"^(-?)\\[dt]?frac\s*\{(-?\d+)\}\s*\{(\d+)\}$")
INTEGER = re.compile(r"^-?\d+$")
DECIMAL = re.compile(r"^-?\d*\.\d+$")
PAIR = re.compile(r"^(\\left)?\(\s*([^,()]+?)\s*,\s*([^,()]+?)\s*(\\right)?\)$")


def reasoning_from(solution):
    """The solution's first paragraphs (no [asy], no boxes), with balanced $ so the text stays well formed."""
    text = re.sub(r"\[asy\].*?\[/asy\]", "", solution, flags=re.S)
    text = re.sub(r"\\boxed\{", "{", text)
    out = ""
    for para in text.split("\n\n"):
        if para.count("$") % 2 or len(out) + len(para) > 700:
            break
        out += para.strip() + "\n\n"
    return out.strip() or "Let us work it out step by step."


def split_top(answer, sep):
    """Splits on `sep` outside brackets."""
    parts, depth, cur = [], 0, ""
    for ch in answer:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        if ch == sep and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    return parts


def simple_scalar(answer):
    return not any(s in answer for s in [",", "=", "\\text", "matrix", "\\in", "\\cup", "\\pm", "(", "[", "\\le",
                                         "\\ge", "<", ">", "\\mbox", "\\$", "_"])


def decimal_of(fr):
    """A decimal the way a model writes one: exact when it terminates, else 10 significant digits."""
    den = fr.denominator
    for p in (2, 5):
        while den % p == 0:
            den //= p
    if den == 1:
        s = f"{float(fr):.12f}".rstrip("0").rstrip(".")
        return s
    return f"{float(fr):.10g}"


def equivalents(answer):
    out = []
    m = FRAC.match(answer)
    if m:
        sign, a, b = m.groups()
        fr = Fraction(int(a), int(b)) * (-1 if sign else 1)
        out.append(("frac->a/b", f"{sign}{a}/{b}"))
        out.append(("frac->dfrac", f"{sign}\\dfrac{{{a}}}{{{b}}}"))
        out.append(("frac->decimal", decimal_of(fr)))
    if INTEGER.match(answer):
        n = int(answer)
        if abs(n) >= 1000:
            out.append(("thousands", f"{n:,}"))
        out.append(("units", f"{answer} \\text{{ units}}"))
        out.append(("integer->float", f"{answer}.0"))
    if simple_scalar(answer) and "^\\circ" not in answer:
        out.append(("x=", f"x = {answer}"))
    if answer.endswith("^\\circ"):
        out.append(("degrees", answer[: -len("^\\circ")] + "^{\\circ}"))
    if simple_scalar(answer) and "\\sqrt{" in answer:
        out.append(("sqrt-braces", re.sub(r"\\sqrt\{(\d)\}", r"\\sqrt\1", answer)))
    terms = split_top(answer, "+")
    if len(terms) == 2 and all(t.strip() for t in terms) and simple_scalar(answer.replace("+", "")) \
            and "-" not in terms[1]:
        out.append(("reorder-sum", f"{terms[1].strip()} + {terms[0].strip()}"))
    m = PAIR.match(answer)
    if m and not m.group(1):
        out.append(("left-right", f"\\left( {m.group(2)}, {m.group(3)} \\right)"))
    if DECIMAL.match(answer):
        out.append(("decimal->frac", f"\\frac{{{Fraction(answer).numerator}}}{{{Fraction(answer).denominator}}}"))
    if m := FRAC.match(answer):
        sign, a, b = m.groups()
        out.append(("frac-unreduced", f"{sign}\\frac{{{2 * int(a)}}}{{{2 * int(b)}}}"))
    if m := re.match(r"^\\text\{\((\w)\)\}$", answer):
        out.append(("choice-letter", m.group(1)))
        out.append(("choice-parens", f"({m.group(1)})"))
    elif m := re.match(r"^\\text\{(\w+)\}$", answer):
        out.append(("text-unwrapped", m.group(1)))
    if "pmatrix" in answer:
        out.append(("pmatrix->bmatrix", answer.replace("pmatrix", "bmatrix")))
    if m := re.match(r"^(\d+)\s*\\sqrt\{?(\d+)\}?$", answer):
        out.append(("sqrt-absorbed", f"\\sqrt{{{int(m.group(1)) ** 2 * int(m.group(2))}}}"))
    if m := re.match(r"^\\sqrt\{(\d+)\}$", answer):
        out.append(("sqrt->power", f"{m.group(1)}^{{1/2}}"))
    items = split_top(answer, ",")
    if len(items) >= 2 and all(re.match(r"^\s*-?\d+\s*$", t) for t in items):
        # math-verify reads a bare list as a set; introspect keeps its order (as the MATH is_equiv does)
        out.append(("list-reordered", ", ".join(t.strip() for t in reversed(items))))
    if m := re.match(r"^([a-z])\s*=\s*(.+)$", answer):
        out.append(("assignment-dropped", m.group(2)))
    if m := re.match(r"^(\d+)\s*\\pi$", answer):
        out.append(("product-reordered", f"\\pi \\cdot {m.group(1)}"))
    return [(k, v) for k, v in out if v != answer]


def wrongs(answer, others, rng):
    out = []
    if INTEGER.match(answer):
        n = int(answer)
        out.append(("off-by-one", str(n + 1)))
        if n != 0:
            out.append(("sign-flip", str(-n)))
    m = FRAC.match(answer)
    if m:
        sign, a, b = m.groups()
        if a.lstrip("-") != b:
            out.append(("frac-inverted", f"{sign}\\frac{{{b}}}{{{a.lstrip('-')}}}"))
        out.append(("frac-numerator+1", f"{sign}\\frac{{{int(a) + 1}}}{{{b}}}"))
        out.append(("frac-sign-flip", ("" if sign else "-") + answer.lstrip("-")))
    if DECIMAL.match(answer):
        digits = answer.rstrip("0")
        out.append(("decimal-last-digit", digits[:-1] + str((int(digits[-1]) + 1) % 10)))
    m = PAIR.match(answer)
    if m and m.group(2).strip() != m.group(3).strip():
        out.append(("pair-swapped", f"({m.group(3)}, {m.group(2)})"))
    if simple_scalar(answer) and not INTEGER.match(answer) and not FRAC.match(answer) and \
            not answer.startswith("-") and not DECIMAL.match(answer):
        out.append(("sign-flip", f"-({answer})" if ("+" in answer or "-" in answer) else f"-{answer}"))
    if re.search(r"[a-zA-Z]", answer) and re.search(r"\d", answer) and "\\text" not in answer and \
            "matrix" not in answer:
        # a coefficient changed: the first digit plus one
        m = re.search(r"\d", answer)
        out.append(("coefficient", answer[: m.start()] + str((int(m.group()) + 1) % 10) + answer[m.end():]))
    if "pmatrix" in answer:
        first = re.search(r"-?\d+", answer)
        if first:
            out.append(("matrix-cell", answer[: first.start()] + str(int(first.group()) + 1) + answer[first.end():]))
    other = rng.choice(others)
    while other == answer:
        other = rng.choice(others)
    out.append(("other-answer", other))
    return out


def build_pairs(data_dir):
    """[(gold, response, kind)] for the shared MATH500 test set: three to five per problem, deterministic."""
    rows = [json.loads(l) for l in (Path(data_dir) / "math/math500/test.jsonl").read_text().splitlines()]
    answers = [r["answer"] for r in rows]
    pairs = []
    for i, row in enumerate(rows):
        rng = random.Random(1000 + i)
        gold = row["answer"]
        reasoning = reasoning_from(row["solution"])
        short = reasoning.split("\n\n")[0][:300]
        if short.count("$") % 2:
            short = "Checking the computation once more."

        def response(ans, template):
            return TEMPLATES[template].format(reasoning=reasoning, short=short, answer=ans)

        pairs.append((gold, response(gold, rng.randrange(len(TEMPLATES))), "same"))
        # up to two rewrites and two wrong answers of different kinds
        for kind, ans in rng.sample(equivalents(gold), k=min(2, len(equivalents(gold)))):
            pairs.append((gold, response(ans, rng.randrange(len(TEMPLATES))), "equivalent:" + kind))
        wrong = wrongs(gold, answers, rng)
        for kind, ans in rng.sample(wrong, k=min(2, len(wrong))):
            pairs.append((gold, response(ans, rng.randrange(len(TEMPLATES))), "wrong:" + kind))
    return pairs


def math_verify_verdicts(pairs):
    from math_verify import parse, verify
    return [bool(verify(parse(f"${gold}$"), parse(resp))) for gold, resp, _ in pairs]


def introspect_verdicts(binary, pairs, timeout="2"):
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
        for gold, resp, _ in pairs:
            f.write(json.dumps({"gold": gold, "pred": resp}) + "\n")
        path = f.name
    out = subprocess.run([binary, "verify", "--extract", "--timeout", timeout, "--cases", path],
                         capture_output=True, text=True, check=True).stdout
    Path(path).unlink()
    return [json.loads(l)["equal"] for l in out.splitlines()]


def main():
    binary, data_dir = sys.argv[1], sys.argv[2]
    pairs = build_pairs(data_dir)
    theirs = math_verify_verdicts(pairs)
    ours = introspect_verdicts(binary, pairs)
    assert len(ours) == len(pairs), f"introspect verify gave {len(ours)} verdicts for {len(pairs)} pairs"
    if "--keep" in sys.argv:
        with open(sys.argv[sys.argv.index("--keep") + 1], "w") as f:
            for (gold, resp, kind), t, o in zip(pairs, theirs, ours):
                f.write(json.dumps({"gold": gold, "pred": resp, "kind": kind, "math_verify": t, "introspect": o}) + "\n")
    by_kind = {}
    for (_, _, kind), t, o in zip(pairs, theirs, ours):
        group = kind.split(":")[0]
        agree, total = by_kind.get(group, (0, 0))
        by_kind[group] = (agree + (t == o), total + 1)
    agree = sum(t == o for t, o in zip(theirs, ours))
    rate = agree / len(pairs)
    print(f"{len(pairs)} pairs from MATH500: agreement with math-verify {agree}/{len(pairs)} = {rate:.4f} "
          f"(goal >= {GOAL}); math-verify says equal for {sum(theirs)}, introspect for {sum(ours)}")
    for group, (a, n) in sorted(by_kind.items()):
        print(f"  {group}: {a}/{n}")
    for (gold, resp, kind), t, o in zip(pairs, theirs, ours):
        if t != o:
            tail = resp[-120:].replace("\n", " ")
            print(f"  disagree [{kind}] gold={gold!r} math-verify={t} introspect={o} response ends: ...{tail!r}")
    sys.exit(0 if rate >= GOAL else 1)


if __name__ == "__main__":
    main()
