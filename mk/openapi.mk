# docs/openapi.yaml (OpenAPI 3.1) is linted by a pinned @redocly/cli:
# tests/openapi/package-lock.json pins every package with its integrity
# hash, npm ci checks each, into var/cache/openapi-lint.  Included by the
# top-level Makefile; `make test` runs `openapi-lint` with the unit tests.
OPENAPI_LINT_DIR := var/cache/openapi-lint
REDOCLY := $(OPENAPI_LINT_DIR)/node_modules/.bin/redocly

.PHONY: openapi-lint
test-data: $(REDOCLY)

$(REDOCLY): tests/openapi/package.json tests/openapi/package-lock.json
	@mkdir -p $(OPENAPI_LINT_DIR)
	@cp tests/openapi/package.json tests/openapi/package-lock.json $(OPENAPI_LINT_DIR)/
	@cd $(OPENAPI_LINT_DIR) && npm ci --ignore-scripts --no-audit --no-fund --silent
	@touch $@

openapi-lint: $(REDOCLY)
	@REDOCLY_TELEMETRY=off REDOCLY_SUPPRESS_UPDATE_NOTICE=true $(REDOCLY) lint --config tests/openapi/redocly.yaml docs/openapi.yaml
