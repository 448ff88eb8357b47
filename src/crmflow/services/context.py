"""What every use-case needs: the database, the settings, the clock, and who is acting; defined
in `crmflow.context` (below the batch runner, which needs it too) and re-exported here."""

from crmflow.context import Actor, Context, Role, system_clock

__all__ = ["Actor", "Context", "Role", "system_clock"]
