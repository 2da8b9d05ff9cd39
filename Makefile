# The course's entry point. Start with README.md.
#
#   make               build every chapter and the tools
#   make chapter-N     build chapter N and run its guided demo (N = 1..7)
#   make test          the whole test suite, every chapter
#   make test-N        the suite against chapter N only
#   make strace-N      one client's session with chapter N's server, whole, under strace
#                      (MODE=-e: with those server arguments; SCENARIO=flood: a client that never reads)
#   make compare A=N B=M   two stages side by side: their code (diff -u), their sessions, their calls
#   make bench         every chapter under the same load, side by side; 07 against Python (5-6 minutes)
#   make c10k          10,000 connections at once on 06-epoll, both modes
#   make lint          cppcheck and clang-tidy on the C, shellcheck on the scripts (half a minute)
#   make clean
#
# CC=clang and SAN=address,undefined (or SAN=thread) pass through to every build.

CHAPTERS := $(patsubst %/,%,$(sort $(wildcard [0-9][0-9]-*/)))

# The directory of chapter N (1, 01 or 01-blocking -> 01-blocking), or a clear stop.
chapter_dir = $(or $(patsubst %/,%,$(firstword $(wildcard $(1)-*/ 0$(1)-*/ $(1)/))),$(error chapter $(1) is not written yet; there are: $(CHAPTERS)))

all: $(CHAPTERS) tools

$(CHAPTERS) tools:
	@$(MAKE) -C $(if $(filter tools,$@),scripts,$@)

chapter-%: tools
	@$(MAKE) -C $(call chapter_dir,$*)
	@scripts/demo.sh $(call chapter_dir,$*)

test: all test-deps
	@tests/run.sh

test-%: tools test-deps
	@$(MAKE) -C $(call chapter_dir,$*)
	@tests/run.sh $(call chapter_dir,$*)

test-deps:
	@scripts/ensure-deps.sh bats bats-support bats-assert python3 strace

strace-%: tools
	@scripts/ensure-deps.sh strace
	@$(MAKE) -C $(call chapter_dir,$*)
	@scripts/strace-session.sh $(call chapter_dir,$*) $(MODE)

# A and B as scripts/strace-compare.sh takes them: 3, 03, 06+et, 06-epoll+et.
compare: tools
	$(if $(and $(A),$(B)),,$(error usage: make compare A=03 B=06 (two chapters, or modes such as 06+et)))
	@scripts/ensure-deps.sh strace
	@$(MAKE) -C $(call chapter_dir,$(firstword $(subst +, ,$(A))))
	@$(MAKE) -C $(call chapter_dir,$(firstword $(subst +, ,$(B))))
	@scripts/strace-compare.sh $(A) $(B)

bench: all
	@scripts/ensure-deps.sh gnuplot-nox python3
	@scripts/bench.sh

c10k: all
	@scripts/c10k.sh 06-epoll
	@scripts/c10k.sh 06-epoll -e

lint:
	@scripts/ensure-deps.sh cppcheck clang-tidy shellcheck
	@scripts/lint.sh

clean:
	@for dir in $(CHAPTERS) scripts; do $(MAKE) -s -C $$dir clean; done

.PHONY: all tools test test-deps compare bench c10k lint clean $(CHAPTERS)
