"""Papercuts of a new user, each with its one-line reason."""
import json
import os
import socket
import subprocess

import pytest

from conftest import BIN, ROOT

README = os.path.join(ROOT, "README.md")


def start_failing(env, tmp_path, **cfg):
    """billingd with env's database and Redis and cfg on top: must refuse to
    start; returns its one line of error."""
    conf = {"listen": "127.0.0.1:0", "pg": env.pg, "redis": env.redis, "gateway_tokens_file": env.gw_tokens,
            "admin_tokens_file": env.admin_tokens, "key_pepper_file": env.stack.pepper,
            "migrations_dir": os.path.join(ROOT, "migrations")}
    conf.update(cfg)
    path = tmp_path / "billingd.conf"
    path.write_text("".join(f"{k} = {v}\n" for k, v in conf.items()))
    p = subprocess.run([os.path.join(BIN, "billingd"), "--config", str(path)], capture_output=True, text=True,
                       timeout=60, cwd=str(tmp_path))
    assert p.returncode != 0, p.stdout + p.stderr
    errors = [l for l in p.stderr.splitlines() if l.startswith("billingd: ")]
    assert len(errors) == 1, p.stderr
    return errors[0]


def test_pepper_in_a_missing_folder_is_named(env, tmp_path):
    line = start_failing(env, tmp_path, key_pepper_file="nodir/key.pepper")
    assert "nodir/key.pepper" in line and "folder 'nodir' does not exist" in line and str(tmp_path) in line, line


def test_cannot_listen_says_why(env, tmp_path):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    try:
        line = start_failing(env, tmp_path, listen=f"127.0.0.1:{s.getsockname()[1]}")
    finally:
        s.close()
    assert "cannot listen on" in line and "Address already in use" in line, line


def test_keygen_creates_the_folder(env, tmp_path):
    out = tmp_path / "etc" / "sub" / "ledger.key"
    p = env.admin("keygen", "--out", str(out))
    assert out.exists() and (tmp_path / "etc" / "sub" / "ledger.key.pub").exists(), p.stderr
    assert oct(out.stat().st_mode & 0o777) == "0o600"


def test_readme_stands_alone():
    import glob
    import re
    text = open(README).read()
    assert len(text.split("\n")) <= 300, "the README is the way in: the manual goes to docs/"
    for page in [README] + sorted(glob.glob(os.path.join(ROOT, "docs", "*.md"))):
        text = open(page).read()
        assert "../shared" not in text, page
        # every relative link points into the repository
        for target in re.findall(r"\]\(([^)#]+)\)", text):
            if "://" not in target:
                assert os.path.exists(os.path.join(os.path.dirname(page), target)), (page, target)


def test_topup_prints_the_balance_labelled(env):
    acct = json.loads(env.admin("account", "create", "--external-id", "pc-topup", "--json").stdout)["account_id"]
    p = env.admin("topup", "--account", acct, "--amount", "2.5", "--payment-ref", "pc-ref-1")
    lines = p.stdout.splitlines()
    assert lines[0] == "top-up pc-ref-1, balance after it:"
    assert any(l.startswith("paid") and "2.5" in l for l in lines), p.stdout
    assert any(l.startswith("promotional") for l in lines) and any(l.startswith("available") for l in lines)
    assert p.stderr == ""


def test_account_create_is_quiet_on_stderr(env):
    p = env.admin("account", "create", "--external-id", "pc-quiet")
    assert p.stderr == "" and "promotion" in p.stdout
