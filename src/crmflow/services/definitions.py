"""Flow definitions parsed once per flow version: a version that has run never changes, and the
worker, the triggers and the views ask for the same few thousands of times. The cache lives in
`crmflow.context`, below the batch runner, which reads it too; re-exported here."""

from crmflow.context import definitions_cache

__all__ = ["definitions_cache"]
