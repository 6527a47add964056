# mk/fresh.mk: `make fresh-machine` (scripts/fresh_machine.sh), outside
# `make test` because it downloads a whole system: a minimal Debian 12 root
# (debootstrap), a clean clone of HEAD in /root/billing inside it, then the
# README's set-up line, `make run` until /healthz answers, and `make test`,
# in there via chroot; prints each step's duration and packages installed.
# Needs root; takes the time of the first `make run` plus a full `make test`.

.PHONY: fresh-machine
fresh-machine:
	@scripts/fresh_machine.sh
