# The one test command is `make test`: it makes the services reachable, then
# runs every test with the race detector. Integration tests may not skip.
GO ?= go
PKGS ?= ./...
FUZZTIME ?= 30s
# The nested modules, each with its own go.mod.
NESTED := bench contrib/watermill

.PHONY: all test services clusters clusters-stop vet fmt build fuzz chaos chaos-outbox chaos-scale bench bench-outbox demo

all: vet test

# The single-node services and the clustered setups (scripts/clusters.sh).
services:
	bash scripts/services.sh

# Only the clustered setups: Redis Cluster, Redis with Sentinel, a 3-node
# RabbitMQ cluster on loopback; `make clusters-stop` stops them (data kept).
clusters:
	bash scripts/clusters.sh start

clusters-stop:
	bash scripts/clusters.sh stop

test: services
	$(GO) vet ./...
	FORGE_REQUIRE_SERVICES=1 $(GO) test -race -timeout 20m -count=1 $(PKGS)
	cd bench && $(GO) vet ./... && FORGE_REQUIRE_SERVICES=1 $(GO) test -race -count=1 ./...
	cd contrib/watermill && $(GO) vet ./... && FORGE_REQUIRE_SERVICES=1 $(GO) test -race -count=1 ./...

build:
	$(GO) build ./...

vet:
	$(GO) vet ./...
	@set -e; for m in $(NESTED); do (cd $$m && $(GO) vet ./...); done

fmt:
	gofmt -l -w .

# Run each fuzz target for FUZZTIME, in this module and the nested ones.
fuzz:
	@set -e; for m in . $(NESTED); do \
	  for pkg in $$(cd $$m && $(GO) list ./...); do \
	    for f in $$(cd $$m && $(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
	      echo "fuzz $$pkg $$f"; \
	      (cd $$m && $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg); \
	    done; \
	  done; \
	done

# The comparisons with the raw clients and with Watermill, in one table.
# BENCHTIME applies to the in-process benchmarks and the outbox relay's
# (whose rates and ratios against PublishBatch are in bench.out, not in the
# table); the end-to-end consumer benchmarks run a fixed number of messages
# (the RabbitMQ consumer with each store against the raw amqp091-go
# consumer: 5 interleaved rounds, medians). Raw output: bench.out.
BENCHTIME ?= 1s
BENCHCOUNT ?= 1
bench: services
	@{ \
	  $(GO) test -run '^$$' -bench . -benchmem -benchtime $(BENCHTIME) -count $(BENCHCOUNT) ./forge/ ./dedupe/... ./publisher/ ./publisher/kafkapub/ ./consumer/ ./outbox/ && \
	  $(GO) test -run '^$$' -bench 'Consume$$' -benchtime 5000x -count $(BENCHCOUNT) ./consumer/kafkasub/ && \
	  $(GO) test -run '^$$' -bench 'SideBySide' -benchtime 5x -count $(BENCHCOUNT) ./consumer/kafkasub/ && \
	  $(GO) test -run '^$$' -bench 'Consume$$' -benchtime 20000x -count $(BENCHCOUNT) ./consumer/rabbitsub/ && \
	  $(GO) test -run '^$$' -bench 'SideBySide' -benchtime 5x -count $(BENCHCOUNT) ./consumer/rabbitsub/ && \
	  (cd bench && $(GO) test -run '^$$' -bench . -benchmem -benchtime $(BENCHTIME) -count $(BENCHCOUNT) ./...); \
	} | tee bench.out
	@echo
	@$(GO) run ./internal/cmd/benchtable < bench.out

# The outbox's claim on a table that keeps OUTBOX_ROWS dispatched rows
# (outbox/pgoutbox BenchmarkLargeTable): it fills the table first, so it is
# not part of make bench (with 1 000 000 rows, about 2 minutes).
OUTBOX_ROWS ?= 1000000
bench-outbox: services
	$(GO) test -run '^$$' -bench LargeTable -benchmem -benchtime $(BENCHTIME) -count $(BENCHCOUNT) ./outbox/pgoutbox/ -args -outbox.rows=$(OUTBOX_ROWS)

demo:
	$(GO) run ./examples/quickstart

# The fault test (internal/cmd/chaos): 20 000 messages through RabbitMQ and
# Kafka while connections, the consumer process and the Kafka broker are
# killed, then 5 000 orders through the transactional outbox (writer → relays
# → RabbitMQ → billing → relays → Kafka → receipts) under the same faults plus
# relay SIGKILLs and a PostgreSQL restart (PG_RESTART; empty: none). Prints
# `chaos: messages=N effects=N duplicates=0 lost=0 faults=F` and
# `chaos-outbox: orders=N events=N effects=N duplicates=0 lost=0 faults=F`.
# The restart disturbs everything else using the server meanwhile.
PG_RESTART ?= pg_ctlcluster --skip-systemctl-redirect $$(ls /etc/postgresql | sort -V | tail -1) main restart
chaos: services
	$(GO) run ./internal/cmd/chaos -n 20000 -orders 5000 -restart-postgres '$(PG_RESTART)'

# Only the outbox scenario of the fault test.
chaos-outbox: services
	$(GO) run ./internal/cmd/chaos -n 0 -orders 5000 -restart-postgres '$(PG_RESTART)'

# The scale-out fault test (internal/cmd/chaos -scale), on the clustered
# setups: 20 000 messages through a RabbitMQ quorum queue on the 3-node
# cluster to SCALE_PROCS forwarder processes (Redis Cluster store) that
# publish to 3 in-process Kafka brokers, read by SCALE_PROCS applier
# processes in one group (PostgreSQL inbox), while processes are killed and
# added, the queue's leading node stops, a Redis Cluster primary is killed
# and partition leaders move. Prints `chaos-scale: processes=SCALE_PROCS
# messages=20000 effects=20000 duplicates=0 lost=0 rebalances=R faults=F`.
# First its tests (a short run, and runs whose checks must fail), which do
# not fit make test's budget. Both take the Redis Cluster and the RabbitMQ
# cluster for themselves, after the tests using them.
SCALE_PROCS ?= 3
chaos-scale: services
	FORGE_REQUIRE_SERVICES=1 $(GO) test -race -tags chaosscale -count=1 -timeout 20m -run 'Scale' ./internal/cmd/chaos
	$(GO) run ./internal/cmd/chaos -n 0 -orders 0 -scale 20000 -procs $(SCALE_PROCS)
