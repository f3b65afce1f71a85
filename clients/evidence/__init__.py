"""Evidence capture for takedown cases: full-page screenshots through a headless Chromium and WARC files of the
HTTP exchanges (fetched with :mod:`jiwoom.shared.web`), so a notice can show what was online, where and when.
"""
