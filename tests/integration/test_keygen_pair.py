"""`billing-admin keygen` leaves a matching key pair, readable as it should
be, or changes nothing.  It wrote FILE first and FILE.pub second, each with
open(O_CREAT, mode): an existing FILE.pub (without --force) stopped it only
after FILE held a new secret key, so the secret key and the public key that
`ledger verify` trusts no longer matched, behind an error; and --force over
a secret key file that was world-readable kept it world-readable (open's
mode applies to new files only)."""
import os



def one_line_error(p, code):
    assert p.returncode == code, f"exit {p.returncode}, wanted {code}:\n{p.stdout}\n{p.stderr}"
    lines = p.stderr.strip("\n").split("\n")
    assert len(lines) == 1 and lines[0].startswith("billing-admin: "), repr(p.stderr)
    return lines[0]


def test_an_existing_public_key_stops_keygen_before_the_secret_key_is_written(env, tmp_path):
    out, pub = tmp_path / "k.key", tmp_path / "k.key.pub"
    pub.write_text("ab" * 32 + "\n")
    err = one_line_error(env.admin("keygen", "--out", out, check=False), 1)
    assert str(pub) in err and "--force" in err
    assert not out.exists()                     # no secret key without its public half
    assert pub.read_text() == "ab" * 32 + "\n"  # the trusted public key untouched


def test_keygen_force_makes_a_wider_secret_key_file_owner_only(env, tmp_path):
    out, pub = tmp_path / "k.key", tmp_path / "k.key.pub"
    env.admin("keygen", "--out", out)
    os.chmod(out, 0o644)
    os.chmod(pub, 0o600)
    env.admin("keygen", "--out", out, "--force")
    assert oct(os.stat(out).st_mode & 0o777) == "0o600"
    assert oct(os.stat(pub).st_mode & 0o777) == "0o644"
    sk, pk = out.read_text().strip(), pub.read_text().strip()
    assert len(sk) == 128 and sk.endswith(pk)


def test_a_public_key_that_cannot_be_written_takes_the_new_secret_key_with_it(env, tmp_path):
    out, pub = tmp_path / "k.key", tmp_path / "k.key.pub"
    pub.mkdir()                                  # FILE.pub cannot be written, even with --force
    err = one_line_error(env.admin("keygen", "--out", out, "--force", check=False), 1)
    assert str(pub) in err
    assert not out.exists()
