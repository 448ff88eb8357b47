"""Configuration from the environment and an optional `.env` file (prefix `CRMFLOW_`)."""

from __future__ import annotations

import ipaddress
import re
from functools import lru_cache
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from crmflow.database_url import checked_database_url

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def allowed_networks(setting: str | None) -> tuple[IpNetwork, ...]:
    """The networks CRMFLOW_WEBHOOK_ALLOW lists ("127.0.0.1/32,10.0.0.0/8"); ValueError names
    an entry that is not one."""
    networks: list[IpNetwork] = []
    for entry in (setting or "").split(","):
        if entry.strip():
            try:
                networks.append(ipaddress.ip_network(entry.strip(), strict=False))
            except ValueError:
                raise ValueError(
                    f"{entry.strip()!r} is not an address or network (e.g. 10.0.0.0/8)"
                ) from None
    return tuple(networks)


__all__ = ["IpNetwork", "Settings", "allowed_networks", "allowed_senders", "get_settings"]

DEFAULT_DATA_DIR = Path("var")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CRMFLOW_", env_file=".env", extra="ignore")

    database_url: str = Field(
        default=f"sqlite:///{DEFAULT_DATA_DIR / 'crmflow.db'}",
        description="SQLAlchemy URL: sqlite:///path.db or postgresql+psycopg://user@host/db",
    )
    timezone: str = Field(
        default="UTC",
        description="The organisation's time zone: relative dates in queries ('today') use it.",
    )
    host: str = "127.0.0.1"
    port: int = 8000
    cli_user: str = Field(
        default="system",
        description="The user the command line acts as (recorded as 'who' in change events).",
    )
    page_size_max: int = 1000
    allow_sql_actions: bool = Field(
        default=False, description="Allow flows to use the run_sql action (admins only)."
    )
    sql_statement_timeout_ms: int = 5000
    max_request_bytes: int = Field(
        gt=0,
        default=10_000_000,
        description="The largest HTTP request body taken (bytes); larger ones are refused with "
        "413 while being read.",
    )
    max_file_bytes: int = Field(
        gt=0,
        default=10_000_000,
        description="The largest file a record's file field keeps (bytes); a larger upload is "
        "refused with 413. An upload through the API is also bounded by max_request_bytes.",
    )
    file_types: str | None = Field(
        default=None,
        description="The content types a file field takes, comma-separated, as read from the "
        "file's first bytes (`*`: any). Default: PDF, PNG, JPEG, GIF, WebP, plain text, CSV, "
        "iCalendar, ZIP and office documents.",
    )
    max_email_bytes: int = Field(
        gt=0,
        default=25_000_000,
        description="The largest email with its attachments (bytes, once encoded): an email "
        "whose record files make it larger fails, saying so.",
    )
    max_field_chars: int = Field(
        gt=0,
        default=256_000,
        description="The longest text a record field may hold (characters).",
    )
    max_document_chars: int = Field(
        gt=0,
        default=1_000_000,
        description="The largest flow, query or record-type document parsed (characters).",
    )
    login_attempts: int = Field(
        gt=0,
        default=5,
        description="Failed sign-ins allowed per user (and per address) before waiting.",
    )
    login_lockout_seconds: int = Field(
        gt=0,
        default=60,
        description="How long sign-ins wait after too many failures (doubles while they go on).",
    )
    web_session_idle_minutes: int = Field(
        gt=0,
        default=120,
        description="A web session unused for this many minutes ends (sign in again).",
    )
    web_session_max_hours: int = Field(
        gt=0,
        default=12,
        description="A web session ends this many hours after sign-in, however much it is used.",
    )
    web_cookie_secure: bool = Field(
        default=False,
        description="Mark the web session cookie Secure even when the request reached the "
        "server over plain HTTP (set it behind a TLS proxy; https requests always get it).",
    )
    action_time_limit_ms: int = Field(
        gt=0,
        default=1000,
        description="The wall-clock budget of one template render or condition evaluation.",
    )
    batch_time_limit_ms: int = Field(
        gt=0,
        default=2000,
        description="A worker's batch stops taking more records once it has run this long, so "
        "that no write transaction holds SQLite's lock for longer.",
    )

    sync_secret: str | None = Field(
        default=None,
        description="The secret an existing CRM signs its record changes with (Standard "
        "Webhooks) to call POST /api/records/{type}/changes without a user token "
        "(docs/integrations.md); unset: only manager and admin tokens may.",
    )
    smtp_url: str | None = Field(
        default=None,
        description="Where emails go: smtp://user:password@host:port (plain, port 25), "
        "smtp+starttls://... (STARTTLS, port 587; or smtp://...?starttls=1), smtps://... "
        "(TLS from the start, port 465). None: the mail catcher keeps them in the database "
        "(`crmflow mail list`).",
    )
    mail_from: str = Field(
        default="crmflow@localhost",
        description="The sender of an email whose action names none.",
    )
    email_allowed_from: str | None = Field(
        default=None,
        max_length=10_000,
        description="The senders (From) emails may have, comma-separated: addresses "
        "(news@example.org) and whole domains (@example.org); a flow naming another is refused "
        "when it is loaded, and the dispatcher refuses such an email. Unset: any sender.",
    )
    secret_key: str | None = Field(
        default=None,
        min_length=16,
        description="Signs the unsubscribe links of marketing emails and the button links of "
        "approval emails (HMAC-SHA256); changing "
        "it voids the links already sent. Unset: a random key made once and kept in the "
        "database.",
    )
    public_url: str | None = Field(
        default=None,
        description="The address people reach this server at (https://crm.example.org), for "
        "the links in emails (unsubscribe, approval buttons). Unset: http://HOST:PORT, the "
        "address `crmflow serve` listens on (its --host and --port); a `crmflow worker` or "
        "`crmflow dispatch` of its own knows only CRMFLOW_HOST and CRMFLOW_PORT.",
    )
    # Bounded history (services.retention, docs/retention.md): days each kind of history is
    # kept; 0 keeps it forever. Pruned by the worker in small batches.
    retention_step_runs_days: int = Field(
        ge=0,
        le=36500,
        default=180,
        description="Days the step runs (with their action logs) of a run that ended are kept "
        "after it ended; per-flow counts keep the statistics. 0: forever.",
    )
    retention_outbox_days: int = Field(
        ge=0,
        le=36500,
        default=180,
        description="Days the outbox messages that are over (delivered, caught mail, failed, "
        "suppressed, cancelled) of a run that ended are kept after it ended. 0: forever.",
    )
    retention_record_changes_days: int = Field(
        ge=0,
        le=36500,
        default=90,
        description="Days record change events are kept (never one the triggers or a paused "
        "flow have yet to read). 0: forever.",
    )
    retention_not_entered_days: int = Field(
        ge=0,
        le=36500,
        default=30,
        description="Days the reasons why records did not enter flows are kept. 0: forever.",
    )
    retention_archived_not_entered: int = Field(
        ge=0,
        le=1_000_000,
        default=1000,
        description="The newest reasons an archived flow keeps of the records kept out of it "
        "(older ones are pruned). 0: no cap.",
    )
    retention_webhook_receipts_days: int = Field(
        ge=3,
        le=36500,
        default=3,
        description="Days the receipts of signed webhook calls are kept: a call repeated with "
        "the same webhook-id within them is answered as already received (at least 3).",
    )
    retention_notifications_days: int = Field(
        ge=0,
        le=36500,
        default=365,
        description="Days notifications (read or not) are kept. 0: forever.",
    )
    retention_jobs_days: int = Field(
        ge=0,
        le=36500,
        default=90,
        description="Days background jobs (start lists, imports) that finished are kept after "
        "they finished. 0: forever.",
    )
    retention_batch_rows: int = Field(
        ge=10,
        le=10_000,
        default=1000,
        description="Rows pruned per transaction: each batch holds the write lock briefly.",
    )
    approval_link_days: int = Field(
        gt=0,
        le=365,
        default=7,
        description="Days an approval email's button links work (each once); after that the "
        "person decides in the app.",
    )
    delivery_max_attempts: int = Field(
        gt=0, default=8, description="Attempts at a message before it is failed."
    )
    delivery_retry_seconds: float = Field(
        gt=0,
        default=30.0,
        description="The wait before the first retry; each next one doubles it (with jitter).",
    )
    delivery_retry_max_seconds: float = Field(
        gt=0, default=6 * 3600.0, description="The longest wait between two attempts."
    )
    delivery_commit_every: int = Field(
        gt=0,
        le=1000,
        default=20,
        description="A dispatcher commits the outcomes of this many sent emails and webhooks "
        "together (or what it has after delivery_commit_seconds; an SMS's at once, alone): "
        "faster, but a dispatcher killed meanwhile sends up to this many again, with the same "
        "Message-ID or webhook-id (docs/delivery.md). 1: each message's outcome on its own.",
    )
    delivery_commit_seconds: float = Field(
        gt=0,
        le=10,
        default=0.5,
        description="The longest a sent message's outcome waits for the others of its group.",
    )
    delivery_write_ahead: int = Field(
        ge=0,
        le=10,
        default=1,
        description="A dispatcher's groups of outcomes (delivery_commit_every) that may wait "
        "for its writer thread (besides the one it commits) while the next messages are sent. "
        "0: each group committed before the next message is sent.",
    )
    rate_limit_email: str | None = Field(
        default=None,
        description="Emails sent at most so fast, e.g. 100/s, 3000/m, 50000/h (bursts up to "
        "the number); a message over the limit waits, pending, for its turn. None: no limit.",
    )
    rate_limit_sms: str | None = Field(default=None, description="SMS at most so fast (N/s|m|h).")
    rate_limit_webhook: str | None = Field(
        default=None, description="Webhook calls at most so fast (N/s|m|h)."
    )
    rate_limit_domains: str | None = Field(
        default=None,
        description="Per destination domain (an email's recipients', a webhook's host), "
        "comma-separated: gmail.com=20/s,yahoo.com=600/m.",
    )
    rate_limit_processes: int = Field(
        gt=0,
        default=1,
        description="The dispatcher processes you run: each keeps to this share of every rate "
        "limit (the threads of one process share it exactly).",
    )

    webhook_connect_timeout: float = Field(
        gt=0,
        default=5.0,
        description="Seconds a webhook or SMS provider call waits to connect.",
    )
    webhook_read_timeout: float = Field(
        gt=0,
        le=300,
        default=30.0,
        description="Seconds a webhook or SMS provider call waits for each read of the answer "
        "(at most: a webhook action's own timeout_seconds, when shorter, wins).",
    )
    webhook_allow: str | None = Field(
        default=None,
        description="Addresses and networks webhooks and the SMS provider may call although they "
        "are loopback, private or link-local, comma-separated (e.g. 127.0.0.1/32,10.0.0.0/8); "
        "unset: public addresses only (docs/delivery.md).",
    )
    sms_url: str | None = Field(
        default=None,
        description="The generic HTTP SMS provider's URL (a POST per message); unset: the SMS "
        "log keeps every SMS in the database (status `caught`).",
    )
    sms_auth_header: str | None = Field(
        default=None,
        description="A header sent with each SMS provider call, 'Name: value' (e.g. "
        "'Authorization: Bearer ...').",
    )
    sms_body: str = Field(
        default='{"to": "{to}", "text": "{text}"}',
        description="The SMS provider call's body, {to} (E.164) and {text} replaced: JSON-escaped "
        "when the body starts with { or [ (sent as JSON), else URL-encoded (sent as a form).",
    )

    log_level: str = Field(
        default="INFO",
        description="The least severe log lines written by serve, worker and dispatch: DEBUG "
        "(each batch too), INFO, WARNING, ERROR or CRITICAL.",
    )
    log_format: str | None = Field(
        default=None,
        description="json (one JSON object a line, for a log collector) or console (readable "
        "lines); unset: console when stderr is a terminal, json otherwise.",
    )
    metrics_token: str | None = Field(
        default=None,
        min_length=16,
        description="The bearer token /metrics asks for (Prometheus' `authorization`); unset: "
        "/metrics answers only calls from this machine (docs/observability.md).",
    )

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, value: str) -> str:
        if value.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            raise ValueError("use DEBUG, INFO, WARNING, ERROR or CRITICAL")
        return value.upper()

    @field_validator("log_format")
    @classmethod
    def _log_format(cls, value: str | None) -> str | None:
        if value is not None and value.lower() not in ("json", "console"):
            raise ValueError("use json or console (or leave it unset)")
        return value.lower() if value is not None else None

    @field_validator("email_allowed_from")
    @classmethod
    def _senders(cls, value: str | None) -> str | None:
        allowed_senders(value)
        return value

    @field_validator("webhook_allow")
    @classmethod
    def _networks(cls, value: str | None) -> str | None:
        allowed_networks(value)
        return value

    @field_validator("rate_limit_email", "rate_limit_sms", "rate_limit_webhook")
    @classmethod
    def _rate(cls, value: str | None) -> str | None:
        if value:
            parse_rate(value)
        return value

    @field_validator("rate_limit_domains")
    @classmethod
    def _domain_rates(cls, value: str | None) -> str | None:
        parse_domain_rates(value)
        return value

    @field_validator("sms_auth_header")
    @classmethod
    def _header(cls, value: str | None) -> str | None:
        if value is not None and not value.partition(":")[0].strip():
            raise ValueError("write the header as 'Name: value'")
        return value

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str) -> str:
        return checked_database_url(value)

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(
                f"unknown time zone {value!r}; use an IANA name such as 'Europe/Paris'"
            ) from exc
        return value

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def public_base_url(self) -> str:
        """The start of the links in emails, without a trailing slash: CRMFLOW_PUBLIC_URL, else
        http://HOST:PORT (`crmflow serve` puts the host and port it listens on in the settings
        its process runs with)."""
        if self.public_url:
            return self.public_url.rstrip("/")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def public_url_unreachable(self) -> bool:
        """Whether the links in emails would name an address nobody can open: no public_url,
        and a host that means every address (0.0.0.0, ::)."""
        if self.public_url:
            return False
        try:
            return ipaddress.ip_address(self.host.strip("[]")).is_unspecified
        except ValueError:
            return self.host.strip() == ""


_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}


def parse_rate(text: str) -> tuple[float, float]:
    """'100/s' -> (100, 1.0): a number of messages per second (s), minute (m) or hour (h)."""
    count, _, unit = text.strip().partition("/")
    try:
        number = float(count)
    except ValueError:
        number = 0.0
    if number <= 0 or unit.strip() not in _UNITS:
        raise ValueError(
            f"rate limit {text!r}: write a number of messages per s, m or h, e.g. 100/s or 3000/m"
        )
    return number, _UNITS[unit.strip()]


def parse_domain_rates(text: str | None) -> dict[str, tuple[float, float]]:
    """'gmail.com=20/s,yahoo.com=600/m' -> {'gmail.com': (20, 1.0), 'yahoo.com': (600, 60.0)}."""
    rates: dict[str, tuple[float, float]] = {}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        domain, equals, rate = part.partition("=")
        if not equals or not domain.strip():
            raise ValueError(
                f"CRMFLOW_RATE_LIMIT_DOMAINS: {part.strip()!r} is not domain=rate, "
                "e.g. gmail.com=20/s"
            )
        rates[domain.strip().lower()] = parse_rate(rate)
    return rates


_SENDER = re.compile(r"[^@\s,<>\"]*@[^@\s,<>\"]+")


def allowed_senders(setting: str | None) -> frozenset[str]:
    """The addresses and @domains CRMFLOW_EMAIL_ALLOWED_FROM lists, in lower case (empty: any
    sender); ValueError names an entry that is neither."""
    entries: set[str] = set()
    for part in (setting or "").split(","):
        entry = part.strip().lower()
        if not entry:
            continue
        if _SENDER.fullmatch(entry) is None:
            raise ValueError(
                f"{entry!r} is neither an address (news@example.org) nor a domain written "
                "with its @ (@example.org)"
            )
        entries.add(entry)
    return frozenset(entries)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
