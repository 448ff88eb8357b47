"""Delivery: the outbox's messages leave crmflow (issue 10). `dispatcher` claims due messages
and records each outcome on its row; `email` builds and sends emails over SMTP, or keeps them
in the database when no server is configured (the mail catcher).

A layer beside the worker: it uses services, the store and the engine; only the worker and the
command line import it.
"""
