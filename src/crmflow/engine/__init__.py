"""The pure core of crmflow: definitions, record types, queries, conditions and lifecycle rules.

Nothing in this package reads a clock, touches a database or talks to the network: time and data
come in as arguments. `make test` checks that contract with import-linter.
"""
