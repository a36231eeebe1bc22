# Two commands on a fresh machine: `make demo` and `make test` (see scripts/dev.sh).
.PHONY: demo test optimize
demo:
	./scripts/dev.sh demo
test:
	./scripts/dev.sh test
optimize:
	./scripts/dev.sh optimize
