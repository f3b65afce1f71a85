"""Takedown notices: which site, which language, which address, what the notice says, and sending it.

A notice is drafted per site for an officer to review; nothing here decides to send. The pieces are plain functions
over data the caller already has (site configuration, fetched pages, captured evidence), so the case system can show
every step to the officer: the language guessed and why, the contact found and where, the rendered text.

Notice wording lives in `templates/<language>.yaml` (Jinja2 strings), one file per language, so a centre can correct
or add a language without touching code.

The modules, each importing only those above it:

- `addresses`: e-mail address checks, host-name normalisation (IDN labels in Unicode).
- `template_files`: the template files: the LANGUAGES we ship, TEMPLATES_DIR, `available_languages`, loading one.
- `sites`: the site list (`load_sites`, see sites.example.yaml), `Site`, `site_for` a URL, its `jurisdiction`.
- `language`: `guess_language` for a page (declared language, script and words of the visible text, host TLD).
- `contacts`: the abuse contact: `contact_from_security_txt`, `contacts_from_page`, `choose_contact`.
- `mail`: `Sender`, `SmtpSettings`, `MailError`, `new_message_id`, `send_mail`.
- `render`: `NoticeItem` and `render_notice`: the items, the legal basis for the jurisdiction, the template rendered.
- `store`: the notices' SQL, one narrow function per query (on the caller's connection; none commits).
- `drafts`: notices in the database: drafting, officers' edits and approval, sending (its SQL is `store`'s).
"""
