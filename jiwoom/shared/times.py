"""Time zones shared by the crawler (post times) and the action side (capture times)."""

from datetime import timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

try:
    KST: tzinfo = ZoneInfo("Asia/Seoul")  # capture and post times are given in UTC and in Korean time
except ZoneInfoNotFoundError:  # minimal images without tzdata; Korea has had no DST since 1988
    KST = timezone(timedelta(hours=9), "KST")
