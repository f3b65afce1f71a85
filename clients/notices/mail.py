"""Sending a notice: who signs it, the centre's SMTP server, Message-IDs, and the mail itself."""

from __future__ import annotations

import re
import smtplib
import ssl
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

from clients.notices.addresses import is_email

__all__ = [
    "MailError",
    "Sender",
    "SmtpSettings",
    "new_message_id",
    "send_mail",
]


@dataclass(frozen=True)
class Sender:
    """Who signs and answers the notice."""

    organisation: str  # e.g. "디지털성범죄피해자지원센터 (Digital Sex Crime Victim Support Center)"
    name: str
    email: str
    phone: str = ""


@dataclass(frozen=True)
class SmtpSettings:
    """The centre's outgoing mail server. `ssl` is implicit TLS (port 465), `starttls` upgrades a plain session."""

    host: str
    port: int = 25
    starttls: bool = False
    ssl: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)  # never in logs
    timeout_s: float = 30.0


class MailError(RuntimeError):
    """A notice could not be handed to the mail server; the message says which notice, where and why."""


def new_message_id(domain: str) -> str:
    """A fresh Message-ID (<...@domain>) to store with the notice before sending, so replies can be matched."""
    return make_msgid(idstring="jiwoom", domain=domain)


def send_mail(smtp: SmtpSettings, *, sender: Sender, recipient: str, subject: str, body: str, message_id: str,
              cc: tuple[str, ...] = ()) -> None:
    """Send one plain-text UTF-8 e-mail. Raises ValueError on bad addresses, MailError when the server fails or
    refuses any recipient (the caller then keeps the notice as unsent)."""
    for role, address in (("sender", sender.email), ("recipient", recipient), *(("cc", a) for a in cc)):
        if not is_email(address):
            raise ValueError(f"{role} address {address!r} is not an e-mail address")
    if not re.fullmatch(r"<[^<>\s@]+@[^<>\s@]+>", message_id):
        raise ValueError(f"message_id must look like <id@domain>, got {message_id!r}")
    if smtp.ssl and smtp.starttls:
        raise ValueError("SmtpSettings: choose ssl (implicit TLS) or starttls, not both")
    local, _, domain = sender.email.rpartition("@")
    message = EmailMessage()
    message["Subject"] = subject
    message["From"] = Address(display_name=sender.organisation, username=local, domain=domain)
    message["To"] = recipient
    if cc:
        message["Cc"] = ", ".join(cc)
    message["Reply-To"] = sender.email
    message["Date"] = format_datetime(datetime.now(UTC))
    message["Message-ID"] = message_id
    message.set_content(body, charset="utf-8")
    recipients = [recipient, *cc]
    where = f"notice {message_id} to {', '.join(recipients)} via {smtp.host}:{smtp.port}"
    try:
        context = ssl.create_default_context()
        client: smtplib.SMTP
        if smtp.ssl:
            client = smtplib.SMTP_SSL(smtp.host, smtp.port, timeout=smtp.timeout_s, context=context)
        else:
            client = smtplib.SMTP(smtp.host, smtp.port, timeout=smtp.timeout_s)
        with client:
            if smtp.starttls:
                client.starttls(context=context)
            if smtp.username:
                client.login(smtp.username, smtp.password or "")
            refused = client.send_message(message, from_addr=sender.email, to_addrs=recipients)
    except smtplib.SMTPRecipientsRefused as e:
        raise MailError(f"{where}: every recipient refused: {e.recipients}") from e
    except (smtplib.SMTPException, OSError) as e:
        raise MailError(f"{where} failed: {e}") from e
    if refused:  # some recipients accepted, some not: the notice did not reach everyone it should
        raise MailError(f"{where}: refused {refused}")
