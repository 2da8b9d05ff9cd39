# The course's entry point. Start with README.md.
#
#   make               build every chapter, the tools, and the reference servers
#                      whose libraries are installed (scripts/reference/)
#   make chapter-N     build chapter N and run its guided demo (N = 1..10)
#   make test          the whole test suite, every chapter
#   make test-N        the suite against chapter N only
#   make strace-N      one client's session with chapter N's server, whole, under strace
#                      (MODE=-e: with those server arguments; SCENARIO=flood: a client that never reads,
#                      SCENARIO=sleep: a client that sends "sleep 100"; make compare takes SCENARIO too)
#   make compare A=N B=M   two stages side by side: their code (diff -u), their sessions, their calls
#   make bench         every chapter and reference server under the same loads, side by side
#                      (about 13 minutes; QUICK=1: one round of four loads, under 2 minutes)
#   make c10k          10,000 connections at once on 06-epoll and 09-epoll-workers (both modes)
#                      and 10-io-uring
#   make lint          cppcheck and clang-tidy on the C, shellcheck on the scripts (about a minute)
#   make clean
#
# CC=clang and SAN=address,undefined (or SAN=thread) pass through to every build.

CHAPTERS := $(patsubst %/,%,$(sort $(wildcard [0-9][0-9]-*/)))

# The directory of chapter N (1, 01 or 01-blocking -> 01-blocking), or a clear stop.
chapter_dir = $(or $(patsubst %/,%,$(firstword $(wildcard $(1)-*/ 0$(1)-*/ $(1)/))),$(error chapter $(1) is not written yet; there are: $(CHAPTERS)))

all: $(CHAPTERS) tools references

$(CHAPTERS) tools:
	@$(MAKE) -C $(if $(filter tools,$@),scripts,$@)

# Chapter 10 links liburing (Debian: liburing-dev): installed first when
# missing, or the exact command to install it is printed.
10-io-uring: liburing
liburing:
	@scripts/ensure-deps.sh liburing-dev

# libevent's and libuv's echo servers, which make bench measures the chapters
# against (the suite checks their protocol too); each is skipped, with a
# note, while its library is missing: make test and make bench install them.
references:
	@$(MAKE) -C scripts/reference

chapter-%: tools
	@$(MAKE) $(call chapter_dir,$*)
	@scripts/demo.sh $(call chapter_dir,$*)

test: test-deps all
	@tests/run.sh

test-%: tools test-deps
	@$(MAKE) -C $(call chapter_dir,$*)
	@tests/run.sh $(call chapter_dir,$*)

test-deps:
	@scripts/ensure-deps.sh bats bats-support bats-assert python3 strace libevent-dev libuv1-dev liburing-dev

strace-%: tools
	@scripts/ensure-deps.sh strace
	@$(MAKE) $(call chapter_dir,$*)
	@scripts/strace-session.sh $(call chapter_dir,$*) $(MODE)

# A and B as scripts/strace-compare.sh takes them: 3, 03, 06+et, 06-epoll+et.
compare: tools
	$(if $(and $(A),$(B)),,$(error usage: make compare A=03 B=06 (two chapters, or modes such as 06+et)))
	@scripts/ensure-deps.sh strace
	@$(MAKE) -C $(call chapter_dir,$(firstword $(subst +, ,$(A))))
	@$(MAKE) -C $(call chapter_dir,$(firstword $(subst +, ,$(B))))
	@scripts/strace-compare.sh $(A) $(B)

# QUICK=1: one round, fewer loads, for a check (scripts/bench.sh -q).
bench:
	@scripts/ensure-deps.sh gnuplot-nox python3 libevent-dev libuv1-dev sockperf linux-perf strace
	@$(MAKE) -s all
	@scripts/bench.sh $(if $(QUICK),-q)

c10k: all
	@scripts/c10k.sh 06-epoll
	@scripts/c10k.sh 06-epoll -e
	@scripts/c10k.sh 09-epoll-workers
	@scripts/c10k.sh 09-epoll-workers -e
	@scripts/c10k.sh 10-io-uring

lint:
	@scripts/ensure-deps.sh cppcheck clang-tidy shellcheck
	@scripts/lint.sh

clean:
	@for dir in $(CHAPTERS) scripts scripts/reference; do $(MAKE) -s -C $$dir clean; done

.PHONY: all tools liburing references test test-deps compare bench c10k lint clean $(CHAPTERS)
