# Shortcuts for the usual tasks; each is one command the README also gives.
.PHONY: serve test check build lambda deploy bench load logs

serve:            ## the API on localhost:8088, embedded backends kept in ./rockets-data
	cargo run --release --bin rockets-local

test:             ## every check, as CI runs it (installs the emulators and tools it needs)
	scripts/test

check:            ## the fast inner loop: formatting, lints, unused dependencies, and the tests that need no emulator
	cargo fmt --all -- --check
	scripts/machete
	cargo clippy --workspace --all-targets --all-features -- -D warnings
	cargo test --workspace

build:            ## the workspace, debug
	cargo build --workspace

lambda:           ## the three functions as Lambda runs them, and their zips
	cargo lambda build --release --bin ingest --bin apply --bin query --output-format zip

deploy:           ## build and deploy the stack with SAM (asks before changing anything)
	sam build --beta-features && sam deploy

bench:            ## every benchmark; writes BENCHMARKS.md
	scripts/bench

load:             ## the challenge's load against a running rockets-local
	cargo run --release --bin rockets -- launch http://localhost:8088/messages --verify

logs:             ## the deployed functions' logs, followed
	sam logs --stack-name rockets --tail
