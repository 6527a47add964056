"""After `make run` (scripts/run_local.sh), every example of the README and
of the manual in docs/ works as written, from the repository root, without
flags: the examples are extracted from README.md and the docs/*.md pages it
lists under "Read next", in that order (so they cannot drift), and run in
order in one bash, each HTTP call with curl --fail-with-body."""
import os
import pathlib
import re
import shutil
import signal
import subprocess
import tempfile
import time

import requests

from conftest import ROOT, free_port

START = re.compile(r"^(\. var/env\b|bin/(billing-admin|ledger) |curl |[A-Z_]+=\$\()")


def manual_pages():
    """README.md, then the docs/*.md pages its "Read next" list links, in order."""
    readme = open(os.path.join(ROOT, "README.md")).read()
    pages = ["README.md"] + re.findall(r"^1\. \[docs/[^]]+\]\((docs/[^)]+\.md)\)", readme, re.M)
    return pages


def manual_text():
    return "\n".join(open(os.path.join(ROOT, p)).read() for p in manual_pages())


def test_the_readme_lists_every_page_of_the_manual():
    listed = set(manual_pages()[1:])
    on_disk = {os.path.join("docs", f) for f in os.listdir(os.path.join(ROOT, "docs")) if f.endswith(".md")}
    assert len(listed) >= 8 and listed == on_disk, (listed, on_disk)


def readme_examples():
    """Each example: the lines of an indented code block that start a command
    (START) joined with their continuations (a trailing backslash, or a
    single quote still open)."""
    lines = manual_text().split("\n")
    out, i = [], 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("    ") and START.match(line[4:]):
            cmd = [line[4:]]
            while cmd[-1].endswith("\\") or "".join(cmd).count("'") % 2:
                i += 1
                cmd.append(lines[i][4:])
            out.append("\n".join(cmd))
        i += 1
    return out


def test_readme_examples_are_extracted():
    ex = readme_examples()
    assert ex[0] == ". var/env"
    assert sum(e.startswith("bin/billing-admin ") for e in ex) >= 20
    assert sum(e.startswith("bin/ledger ") for e in ex) >= 5
    assert sum(e.startswith("curl ") for e in ex) >= 12
    # every command of the CLI synopsis has a runnable example
    text = manual_text()
    runnable = "\n".join(ex)
    synopsis = re.findall(r"^    ((?:billing-admin|ledger) .*)$", text, re.M)
    assert len(synopsis) >= 25, synopsis
    for line in synopsis:
        words = line.split()
        sub = []
        for w in words[1:]:
            if not re.fullmatch(r"[a-z-]+(\|[a-z-]+)*", w) or w.startswith("-"):
                break
            sub.append(w)
        for alt in sub[-1].split("|"):
            cmd = " ".join(["bin/" + words[0]] + sub[:-1] + [alt])
            assert re.search("^" + re.escape(cmd) + "( |$)", runnable, re.M), cmd


def test_every_readme_example_works_after_make_run(tmp_path):
    port = free_port()
    top = pathlib.Path(tempfile.mkdtemp(prefix="billing-readme-"))
    os.chmod(top, 0o755)  # the postgres user must reach var/stack
    var = top / "var"
    env = dict(os.environ, VAR_DIR=str(var), BILLING_LISTEN=f"127.0.0.1:{port}")
    for k in list(env):
        if k.startswith("BILLING_") and k not in ("BILLING_LISTEN",):
            del env[k]
    log = open(tmp_path / "run.log", "wb")
    p = subprocess.Popen([os.path.join(ROOT, "scripts", "run_local.sh")], env=env, stdout=log,
                         stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and p.poll() is None:
            try:
                if requests.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            time.sleep(0.2)
        else:
            raise AssertionError(open(tmp_path / "run.log").read())
        # a repository root: the stack's var/ and the built programs
        os.symlink(os.path.join(ROOT, "bin"), top / "bin")
        script = ["set -eu -o pipefail", "curl() { command curl --fail-with-body \"$@\"; }"]
        for n, e in enumerate(readme_examples()):
            script.append(f"echo {n}: {shlex_quote(e.splitlines()[0])} >&2")
            script.append(e)
        script.append("echo ALL-EXAMPLES-RAN >&2")
        clean = {k: v for k, v in os.environ.items() if not k.startswith("BILLING_")}
        r = subprocess.run(["bash", "-c", "\n".join(script)], cwd=top, env=clean, capture_output=True,
                           text=True, timeout=600)
        assert r.returncode == 0 and "ALL-EXAMPLES-RAN" in r.stderr, \
            f"exit {r.returncode}\n--- stderr (last example first failed)\n{r.stderr[-3000:]}\n--- stdout\n{r.stdout[-2000:]}"
    finally:
        os.killpg(p.pid, signal.SIGINT)
        p.wait(timeout=60)
        shutil.rmtree(top, ignore_errors=True)


def shlex_quote(s):
    import shlex
    return shlex.quote(s)
