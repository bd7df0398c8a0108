#!/usr/bin/env python3
"""Replaces one generated section of a markdown file, leaving the rest of
the file byte for byte as it was:

    <!-- BEGIN generated: NAME (COMMAND) -->
    ...
    <!-- END generated: NAME -->

Usage: section.py FILE NAME [--command CMD] < CONTENT

The content comes from stdin. Without the markers in FILE the section is
added at the end.
A BEGIN without its END, or a marker twice, is exit 2 naming the file and
the section. The file is replaced whole (temporary file and rename)."""
import os
import sys
import tempfile


class SectionError(Exception):
    pass


def begin_marker(name, command=""):
    return f"<!-- BEGIN generated: {name}" + (f" ({command})" if command else "") + " -->"


def end_marker(name):
    return f"<!-- END generated: {name} -->"


def replace(text, name, content, command=""):
    """text with the section NAME's content replaced (or added)."""
    lines = text.split("\n")
    bprefix = f"<!-- BEGIN generated: {name} "
    begins = [i for i, l in enumerate(lines) if l.startswith(bprefix) and l.endswith("-->")]
    ends = [i for i, l in enumerate(lines) if l == end_marker(name)]
    body = content.rstrip("\n").split("\n")
    block = [begin_marker(name, command)] + body + [end_marker(name)]
    if not begins and not ends:
        at = len(lines)
        while at > 0 and lines[at - 1] == "":
            at -= 1
        # one blank line before, the file's last newline after
        block = ([""] if at > 0 else []) + block + ([""] if at == len(lines) else [])
        return "\n".join(lines[:at] + block + lines[at:])
    if len(begins) != 1 or len(ends) != 1 or ends[0] < begins[0]:
        raise SectionError(f"section {name}: {len(begins)} BEGIN and {len(ends)} END markers"
                           + (" (END first)" if begins and ends and ends[0] < begins[0] else "")
                           + "; want one of each, BEGIN first")
    return "\n".join(lines[:begins[0]] + block + lines[ends[0] + 1:])


def write_atomic(path, text):
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".tmp", dir=d)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        if os.path.exists(path):
            os.chmod(tmp, os.stat(path).st_mode & 0o777)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def main(argv):
    import argparse
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("file")
    ap.add_argument("name")
    ap.add_argument("--command", default="", help="the command that generates the section (written in the BEGIN marker)")
    a = ap.parse_args(argv)
    try:
        text = open(a.file, encoding="utf-8").read() if os.path.exists(a.file) else ""
        out = replace(text, a.name, sys.stdin.read(), a.command)
    except (SectionError, OSError, UnicodeDecodeError) as e:
        print(f"{a.file}: {e}", file=sys.stderr)
        return 2
    write_atomic(a.file, out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
