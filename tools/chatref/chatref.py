"""chatref.py: Python's jinja2 as transformers configures it, the reference
for data/chat's tests beside @huggingface/jinja (chatref.mjs).

    /usr/bin/python3 tools/chatref/chatref.py < cases.json > out.json

For each case {template, context} of the JSON array on stdin, prints
{text} or {error} (raise_exception, a syntax error). The environment is
transformers' _compile_jinja_template: an ImmutableSandboxedEnvironment
with trim_blocks, lstrip_blocks and loop controls, tojson without ASCII
escapes, and raise_exception and strftime_now as globals.
"""
import json
import sys
from datetime import datetime

from jinja2.exceptions import TemplateError
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment


def raise_exception(message):
    raise TemplateError(message)


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def strftime_now(fmt):
    return datetime.now().strftime(fmt)


env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
env.filters["tojson"] = tojson
env.globals["raise_exception"] = raise_exception
env.globals["strftime_now"] = strftime_now

out = []
for case in json.load(sys.stdin):
    try:
        out.append({"text": env.from_string(case["template"]).render(**case["context"])})
    except Exception as e:  # every failure is a result the Go side compares
        out.append({"error": str(e)})
json.dump(out, sys.stdout)
