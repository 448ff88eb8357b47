"""The pure core of crmflow: definitions, record types, queries, conditions and lifecycle rules.

Nothing in this package touches a database, talks to the network or starts a process: time and
data come in as arguments, and what must run elsewhere (a CEL condition too heavy to run in
process) goes to a runner the caller injects (`EvaluationLimits.cel_runner`). The only clock
read is `time.monotonic()`, for the budgets of an evaluation and the deadline of a run of steps:
it changes no result, only whether work may go on now or waits for the next call. `make test`
checks that contract with import-linter.
"""
