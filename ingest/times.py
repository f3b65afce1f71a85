"""Post times as boards and forums print them, turned into aware UTC datetimes.

Korean boards print KST wall-clock times ("2026.11.21 14:03", "26-11-21", "14:03" for today) and relative ones
("3시간 전", "어제 14:03"); English forums print "3 hours ago", "Nov 21, 2026 2:03 pm" or put ISO 8601 in
<time datetime>. A time here ends up in evidence, so anything ambiguous or implausible is None, never a guess.
"""

import re
import unicodedata
from datetime import UTC, date, datetime, timedelta, timezone, tzinfo

from jiwoom.shared.times import KST

FUTURE_SLACK = timedelta(days=1)  # a board clock or zone a little ahead is plausible; further ahead is a misparse
CLOCK_SKEW = timedelta(minutes=10)  # "14:03" up to this far ahead of now is today (skewed clock), beyond: yesterday
EARLIEST = datetime(1995, 1, 1, tzinfo=UTC)  # no web board post predates this: earlier means a number misread as a date
MAX_INPUT = 200  # a time is short; longer input is page text, where a search would find numbers that aren't times

_AMPM = r"오전|오후|am|pm|a\.m\.|p\.m\."
# "14:03", "14:03:05", "오후 2:03", "2:03 pm", "오후 2시 3분", "2시"; a bare number is never a time.
_CLOCK = (
    rf"(?:(?P<ampm1>{_AMPM})\s*)?(?P<h>\d{{1,2}})"
    r"(?::(?P<m>\d{2})(?::(?P<s>\d{2})(?:[.,]\d+)?)?|\s*시(?:\s*(?P<m2>\d{1,2})\s*분)?(?:\s*(?P<s2>\d{1,2})\s*초)?)"
    rf"(?:\s*(?P<ampm2>{_AMPM}))?"
)
_CLOCK_RE = re.compile(rf"(?<![\d:]){_CLOCK}(?![\d:])")
# What may sit between a date and its time: "2026.11.21 14:03", "Nov 21, 2026 at 2:03 pm", "2026-11-21T14:03".
_CLOCK_AFTER_RE = re.compile(rf"[\s,.t@-]*(?:at\s+)?{_CLOCK}(?![\d:])")

_ISO_RE = re.compile(
    r"(?<!\d)(\d{4})-(\d{2})-(\d{2})[t ]\s*(\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d{1,6})\d*)?)?"
    r"\s*(z|utc|gmt|[+-]\d{2}(?::?\d{2})?)?(?![\d:])"
)
_EPOCH_RE = re.compile(r"\d{10}|\d{13}")  # data-time / data-timestamp attributes (XenForo and others)
_WEEKDAY_RE = re.compile(r"\(\s*(?:[월화수목금토일](?:요일)?|mon|tue|wed|thu|fri|sat|sun)[a-z]*\.?\s*\)")

_KO_NOW_RE = re.compile(r"방금")
_EN_NOW_RE = re.compile(r"\bjust now\b|\bmoments? ago\b|\b(?:a )?few seconds ago\b|^now$")
_KO_AGO_RE = re.compile(r"(\d{1,4})\s*(초|분|시간|일|주|개월|달|년)\s*전")
_KO_DAY_AGO_RE = re.compile(r"하루\s*전")
_EN_AGO_RE = re.compile(
    r"\b(\d{1,4}|an?|one)\s*(seconds?|secs?|s|minutes?|mins?|m|hours?|hrs?|h|days?|d|weeks?|wks?|w|months?|mos?|"
    r"years?|yrs?|y)\s+ago\b"
)
_DAY_WORD_RE = re.compile(r"(오늘|어제|그저께|그제|엊그제|\btoday\b|\byesterday\b)")
_DAY_WORD_BACK = {"오늘": 0, "today": 0, "어제": 1, "yesterday": 1, "그제": 2, "그저께": 2, "엊그제": 2}

_KO_DATE_RE = re.compile(r"(?:(\d{4}|\d{2})\s*년\s*)?(\d{1,2})\s*월\s*(\d{1,2})\s*일")
# Same separator twice, so "2026.11-21" or a version number "1.2.3-4" is not read as a date.
_YMD_RE = re.compile(r"(?<![\d.:/-])(\d{4}|\d{2})\s*([./-])\s*(\d{1,2})\s*\2\s*(\d{1,2})(?![\d:])\.?")
_DMY_RE = re.compile(r"(?<![\d.:/-])(\d{1,2})\s*([./-])\s*(\d{1,2})\s*\2\s*(\d{4})(?!\d)")
_MD_RE = re.compile(r"(?<![\d.:/-])(\d{1,2})\s*([./-])\s*(\d{1,2})(?![\d:]|[./-]\d)\.?")

_MONTH = (
    r"(jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|sep(?:t(?:ember)?)?|"
    r"oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)\.?"
)
_EN_MDY_RE = re.compile(rf"\b{_MONTH}\s+(\d{{1,2}})(?:st|nd|rd|th)?\b(?:,?\s*(\d{{4}})\b)?")
_EN_DMY_RE = re.compile(rf"\b(\d{{1,2}})(?:st|nd|rd|th)?\s+(?:of\s+)?{_MONTH}\b(?:,?\s*(\d{{4}})\b)?")
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")


def parse_post_time(text: str, now: datetime, tz: tzinfo = KST) -> datetime | None:
    """The moment a board's time string denotes, as an aware UTC datetime, or None.

    Wall-clock forms without a zone are read in `tz` (KST for Korean boards); relative forms count back from `now`
    (naive `now` is taken as UTC). Day-only relative forms ("어제", "2 days ago") keep now's time of day, dates
    without a time are midnight, dates without a year are this year unless that is in the future. Results before
    1995 or more than a day after `now` are None: a misparse is worse than no time.
    """
    if not text:
        return None
    now = now if now.tzinfo is not None else now.replace(tzinfo=UTC)
    s = unicodedata.normalize("NFKC", text)[:MAX_INPUT].lower()
    s = " ".join(_WEEKDAY_RE.sub(" ", s).split())
    if not s:
        return None
    try:
        found = _parse(s, now, tz)
    except (ValueError, OverflowError):  # day 31 of a 30-day month, hour 25 and friends
        return None
    if found is None:
        return None
    found = found.astimezone(UTC)
    return found if EARLIEST <= found <= now + FUTURE_SLACK else None


def _parse(s: str, now: datetime, tz: tzinfo) -> datetime | None:
    local = now.astimezone(tz)
    if _EPOCH_RE.fullmatch(s):
        seconds = int(s) / (1000 if len(s) == 13 else 1)
        return datetime.fromtimestamp(seconds, UTC)
    if m := _ISO_RE.search(s):
        return _iso(m, tz)
    if _KO_NOW_RE.search(s) or _EN_NOW_RE.search(s):
        return now
    if m := _KO_AGO_RE.search(s):
        return _ago(now, int(m[1]), m[2])
    if _KO_DAY_AGO_RE.search(s):
        return now - timedelta(days=1)
    if m := _EN_AGO_RE.search(s):
        amount = 1 if m[1] in ("a", "an", "one") else int(m[1])
        return _ago(now, amount, m[2])
    if m := _DAY_WORD_RE.search(s):
        day = local.date() - timedelta(days=_DAY_WORD_BACK[m[1]])
        clock = _clock_after(s, m.end())
        if clock is None:
            return now - timedelta(days=_DAY_WORD_BACK[m[1]])
        return datetime(day.year, day.month, day.day, *clock, tzinfo=tz)
    if m := _KO_DATE_RE.search(s):
        return _dated(_year(m[1]), int(m[2]), int(m[3]), _clock_after(s, m.end()), local, tz)
    if m := _YMD_RE.search(s):
        return _dated(_year(m[1]), int(m[3]), int(m[4]), _clock_after(s, m.end()), local, tz)
    if m := _DMY_RE.search(s):
        first, second = int(m[1]), int(m[3])
        if first != second and first <= 12 and second <= 12:
            return None  # 05/11/2026: May or November depends on the site's locale, which we don't know
        day, month = (first, second) if first > 12 else (second, first)
        return _dated(int(m[4]), month, day, _clock_after(s, m.end()), local, tz)
    for regex, month_group, day_group in ((_EN_MDY_RE, 1, 2), (_EN_DMY_RE, 2, 1)):
        if m := regex.search(s):
            month = _MONTHS.index(m[month_group][:3]) + 1
            return _dated(_year(m[3]), month, int(m[day_group]), _clock_after(s, m.end()), local, tz)
    if m := _MD_RE.search(s):
        return _dated(None, int(m[1]), int(m[3]), _clock_after(s, m.end()), local, tz)
    if m := _CLOCK_RE.search(s):
        clock = _clock(m)
        if clock is None:
            return None
        today = datetime(local.year, local.month, local.day, *clock, tzinfo=tz)
        # A board prints only the time for today's posts; ahead of now it must have been yesterday's.
        return today - timedelta(days=1) if today > now + CLOCK_SKEW else today
    return None


def _iso(m: re.Match[str], tz: tzinfo) -> datetime:
    fraction = int((m[7] or "0").ljust(6, "0"))
    zone = m[8]
    if zone is None:
        zone_info = tz
    elif zone in ("z", "utc", "gmt"):
        zone_info = UTC
    else:
        digits = zone[1:].replace(":", "")
        offset = timedelta(hours=int(digits[:2]), minutes=int(digits[2:] or 0))
        zone_info = timezone(-offset if zone[0] == "-" else offset)
    return datetime(int(m[1]), int(m[2]), int(m[3]), int(m[4]), int(m[5]), int(m[6] or 0), fraction, tzinfo=zone_info)


def _ago(now: datetime, amount: int, unit: str) -> datetime:
    unit = unit.rstrip("s") if len(unit) > 1 else unit
    if unit in ("초", "second", "sec", "s"):
        return now - timedelta(seconds=amount)
    if unit in ("분", "minute", "min", "m"):
        return now - timedelta(minutes=amount)
    if unit in ("시간", "hour", "hr", "h"):
        return now - timedelta(hours=amount)
    if unit in ("일", "day", "d"):
        return now - timedelta(days=amount)
    if unit in ("주", "week", "wk", "w"):
        return now - timedelta(weeks=amount)
    months = amount * 12 if unit in ("년", "year", "yr", "y") else amount  # 개월, 달, month, mo
    return _months_back(now, months)


def _months_back(moment: datetime, months: int) -> datetime:
    index = moment.year * 12 + moment.month - 1 - months
    year, month = divmod(index, 12)
    month += 1
    next_month = date(year + (month == 12), month % 12 + 1, 1)
    last_day = (next_month - timedelta(days=1)).day
    return moment.replace(year=year, month=month, day=min(moment.day, last_day))


def _year(text: str | None) -> int | None:
    if text is None:
        return None
    return int(text) + 2000 if len(text) == 2 else int(text)  # "26.11.21": Korean boards print YY.MM.DD


def _clock(m: re.Match[str]) -> tuple[int, int, int] | None:
    hour = int(m["h"])
    minute = int(m["m"] or m["m2"] or 0)
    second = int(m["s"] or m["s2"] or 0)
    ampm = m["ampm1"] or m["ampm2"]
    if ampm:
        if not 1 <= hour <= 12:
            return None
        afternoon = ampm in ("오후", "pm", "p.m.")
        hour = hour % 12 + (12 if afternoon else 0)
    if hour > 23 or minute > 59 or second > 59:
        return None
    return hour, minute, second


def _clock_after(s: str, pos: int) -> tuple[int, int, int] | None:
    m = _CLOCK_AFTER_RE.match(s, pos)
    return _clock(m) if m else None


def _dated(
    year: int | None, month: int, day: int, clock: tuple[int, int, int] | None, local: datetime, tz: tzinfo
) -> datetime:
    hms = clock or (0, 0, 0)
    if year is not None:
        return datetime(year, month, day, *hms, tzinfo=tz)
    found = datetime(local.year, month, day, *hms, tzinfo=tz)
    # "11.21" means the latest 21 November not after now: a board omits the year only for recent posts.
    if found > local + CLOCK_SKEW:
        found = datetime(local.year - 1, month, day, *hms, tzinfo=tz)
    return found
