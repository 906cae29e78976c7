#!/usr/bin/env python3
"""code-size.py — files over 500 lines and functions over 60 lines.

Usage: scripts/code-size.py [--check] [DIR ...]   (default: shared/src)

Counts what a reader reads: a file's lines outside its `#[cfg(test)]`
module (files named `tests.rs` or under a `tests/` directory are skipped
whole), and each `fn`'s lines from its signature to its closing brace.
Strings, raw strings, chars and comments are blanked before braces are
matched, so SQL or format strings with braces do not confuse it.

The exceptions kept on purpose are the rows of the table under
"## Size exceptions" in docs/ARCHITECTURE.md (`| path | item | why |`,
item `(file)` for a file). With --check, anything over the limits that is
not listed there makes the exit status 1.
"""

import os
import re
import sys

FILE_LIMIT = 500
FN_LIMIT = 60
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FN_RE = re.compile(
    r"^\s*(?:pub(?:\([^)]*\))?\s+)?(?:const\s+)?(?:async\s+)?(?:unsafe\s+)?"
    r"(?:extern\s+\"[^\"]*\"\s+)?fn\s+(\w+)"
)


def blank(text):
    """The text with strings, chars and comments replaced by spaces
    (newlines kept, so line numbers hold)."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif text.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if text.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif text.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif re.match(r'b?r#*"', text[i:i + 40]) and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            m = re.match(r'b?r(#*)"', text[i:])
            end = '"' + m.group(1)
            j = text.find(end, i + m.end())
            j = n if j < 0 else j + len(end)
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            j += 1
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c == "'":
            m = re.match(r"'(\\.[^']*|[^\\'])'", text[i:])
            if m:
                out.append(" " * m.end())
                i += m.end()
            else:  # a lifetime
                out.append(c)
                i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def test_module_start(lines):
    """Index of the first line of the file's `#[cfg(test)] mod ... {` (or
    len(lines))."""
    for i, line in enumerate(lines[:-1]):
        if line.strip() == "#[cfg(test)]" and re.match(r"\s*(pub\s+)?mod\s+\w+\s*\{", lines[i + 1]):
            return i
    return len(lines)


def measure(path):
    """(code lines, [(fn name, first line, length)]) of one file."""
    text = open(path, encoding="utf-8").read()
    lines = text.split("\n")
    cut = test_module_start(lines)
    code = blank(text).split("\n")[:cut]
    fns = []
    i = 0
    while i < len(code):
        m = FN_RE.match(code[i])
        if not m:
            i += 1
            continue
        depth, started, j = 0, False, i
        while j < len(code):
            for ch in code[j]:
                if ch == "{":
                    depth, started = depth + 1, True
                elif ch == "}":
                    depth -= 1
            if started and depth <= 0:
                break
            if not started and code[j].rstrip().endswith(";"):
                break
            j += 1
        if started:
            fns.append((m.group(1), i + 1, j - i + 1))
            # Nested fns are measured as part of their parent only.
            i = j + 1
        else:
            i += 1
    while cut > 0 and not lines[cut - 1].strip():
        cut -= 1
    return cut, fns


def exceptions():
    """{(path, item)} listed under "## Size exceptions"."""
    doc = os.path.join(ROOT, "docs", "ARCHITECTURE.md")
    found, inside = set(), False
    for line in open(doc, encoding="utf-8"):
        if line.startswith("## "):
            inside = line.strip() == "## Size exceptions"
            continue
        if inside and line.startswith("| `"):
            cells = [c.strip().strip("`") for c in line.strip().strip("|").split("|")]
            if len(cells) >= 2:
                found.add((cells[0], cells[1]))
    return found


def main(argv):
    check = "--check" in argv
    dirs = [a for a in argv if not a.startswith("--")] or ["shared/src"]
    allowed = exceptions()
    over = []
    for d in dirs:
        for root, _, files in os.walk(os.path.join(ROOT, d)):
            for f in sorted(files):
                path = os.path.join(root, f)
                rel = os.path.relpath(path, ROOT)
                if not f.endswith(".rs") or f == "tests.rs" or "/tests/" in "/" + rel:
                    continue
                size, fns = measure(path)
                if size > FILE_LIMIT:
                    over.append((rel, "(file)", size, FILE_LIMIT))
                for name, line, length in fns:
                    if length > FN_LIMIT:
                        over.append((rel, name, length, FN_LIMIT))
    unlisted = 0
    for rel, item, size, limit in sorted(over):
        listed = (rel, item) in allowed
        unlisted += not listed
        mark = "listed" if listed else "OVER"
        print(f"{mark:6} {rel} {item}: {size} lines (limit {limit})")
    print(f"code-size: {len(over)} over the limits, {unlisted} not listed in docs/ARCHITECTURE.md")
    return 1 if check and unlisted else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
